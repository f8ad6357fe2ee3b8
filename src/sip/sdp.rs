//! SDP bodies and the offer/answer model for screenpop's audio legs.
//!
//! What is implemented:
//!
//! * Parsing and serialising session descriptions, RFC 8866 (which obsoletes
//!   RFC 4566): `v=`, `o=` (§5.2), `s=` (§5.3), `c=` (§5.7) at session and
//!   media level, `m=` (§5.14), and the attributes `a=rtpmap` (§6.6),
//!   `a=fmtp` (§6.15), `a=ptime` (§6.4), `a=maxptime` (§6.5) and the
//!   direction attributes (§6.7). Lines we do not interpret (`t=`, `b=`,
//!   `i=`, unknown letters, unknown attributes) are kept and written back.
//!   `a=rtcp` (RFC 3605) is parsed as well.
//! * The RFC 3551 §6 static payload types, so that `0` means PCMU/8000 and `8`
//!   means PCMA/8000 even without an `a=rtpmap`.
//! * Offer/answer, RFC 3264: answering an offer (§6, §6.1), including
//!   rejecting the streams we do not use with port 0, the direction rules, the
//!   legacy `c=0.0.0.0` hold of RFC 2543 (RFC 3264 §8.4), and checking the
//!   answer to one of our own offers (§7). Origin version bumps follow §8.
//! * DTMF as RFC 4733 `telephone-event/8000`, kept with the offerer's payload
//!   type number and `fmtp`.
//!
//! Only G.711 (PCMU/PCMA) is negotiated, over `RTP/AVP` or, with SDES keys
//! (RFC 4568, `AES_CM_128_HMAC_SHA1_80`/`_32`), over `RTP/SAVP`: the media
//! engine anchors, decrypts, records and re-encrypts G.711 itself.
//!
//! Nothing here panics on input: every malformed line is reported as an
//! [`SdpError`] naming the line and what is wrong with it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::str::FromStr;

use thiserror::Error;

use crate::media::srtp::{Crypto, MasterKey, Suite};

/// Packetisation interval when the offer does not state one: RFC 3551 §4.5
/// gives 20 ms as the default for G.711.
pub(crate) const DEFAULT_PTIME_MS: u32 = 20;

/// The RFC 4733 events we advertise in our own offers: DTMF 0-9, *, #, A-D
/// (0-15) and flash (16), which is what Asterisk and FreeSWITCH offer too.
pub(crate) const DEFAULT_DTMF_EVENTS: &str = "0-16";

/// Offending input is quoted in errors, but never more than this many
/// characters of it, so that a hostile body cannot flood the logs.
const MAX_SNIPPET_CHARS: usize = 80;

fn snippet(s: &str) -> String {
    s.chars().take(MAX_SNIPPET_CHARS).collect()
}

/// What is wrong with an SDP body. Line numbers count from 1, by LF.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// The body has no non-blank line at all.
    #[error("SDP body is empty")]
    Empty,
    /// RFC 8866 §5: the first line must be the protocol version.
    #[error("SDP must start with a `v=` line, found {found:?}")]
    MissingVersion { found: String },
    /// RFC 8866 §5.1: only version 0 exists.
    #[error("unsupported SDP version `v={found}` (only `v=0` is defined)")]
    UnsupportedVersion { found: String },
    /// A line that is not `<letter>=<value>`.
    #[error("line {line}: {found:?} is not a `<type>=<value>` line")]
    MalformedLine { line: usize, found: String },
    /// A line that may appear only once (`v=`, `o=`, `s=`, session `c=`).
    #[error("line {line}: second `{kind}=` line")]
    DuplicateLine { line: usize, kind: char },
    /// A session-level line (`v=`, `o=`, `s=`) after the first `m=`.
    #[error("line {line}: `{kind}=` is a session-level line but appears inside a media section")]
    MisplacedLine { line: usize, kind: char },
    /// RFC 8866 §5.2: `o=` is mandatory.
    #[error("SDP has no `o=` line")]
    MissingOrigin,
    /// RFC 8866 §5.3: `s=` is mandatory.
    #[error("SDP has no `s=` line")]
    MissingSessionName,
    /// `o=` does not have its six fields.
    #[error("line {line}: `o=` must be `<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`, found {found:?}")]
    BadOrigin { line: usize, found: String },
    /// The `o=` session version is not an unsigned 64-bit number.
    #[error("line {line}: `o=` session version {found:?} is not an unsigned integer")]
    BadSessionVersion { line: usize, found: String },
    /// `c=` does not have its three fields.
    #[error(
        "line {line}: `c=` must be `<nettype> <addrtype> <connection-address>`, found {found:?}"
    )]
    BadConnection { line: usize, found: String },
    /// `m=` has fewer than its three leading fields.
    #[error("line {line}: `m=` must be `<media> <port> <proto> <fmt> ...`, found {found:?}")]
    BadMediaLine { line: usize, found: String },
    /// The `m=` port (or `port/count`) is not a 16-bit number.
    #[error("line {line}: `m=` port {found:?} is not a number in 0..=65535")]
    BadPort { line: usize, found: String },
    /// An RTP `m=` line lists a format that is not a payload type.
    #[error("line {line}: RTP payload type {found:?} is not a number in 0..=127")]
    BadPayloadType { line: usize, found: String },
    /// RFC 8866 §5.14: an active `m=` line needs at least one format.
    #[error("line {line}: `m=` with a non-zero port lists no formats")]
    NoFormats { line: usize },
    /// `a=rtpmap` is not `<pt> <encoding>/<clock rate>[/<channels>]`.
    #[error("line {line}: `a=rtpmap` must be `<pt> <encoding>/<clock rate>[/<channels>]`, found {found:?}")]
    BadRtpmap { line: usize, found: String },
    /// `a=fmtp` is not `<pt> <parameters>`.
    #[error("line {line}: `a=fmtp` must be `<pt> <parameters>`, found {found:?}")]
    BadFmtp { line: usize, found: String },
    /// `a=ptime` or `a=maxptime` is not a number of milliseconds.
    #[error("line {line}: `a={name}` value {found:?} is not a number of milliseconds")]
    BadPacketTime {
        line: usize,
        name: &'static str,
        found: String,
    },
    /// RFC 3605: `a=rtcp` is `<port> [<nettype> <addrtype> <address>]`.
    #[error(
        "line {line}: `a=rtcp` must be `<port> [<nettype> <addrtype> <address>]`, found {found:?}"
    )]
    BadRtcp { line: usize, found: String },
    /// More media sections than any call needs: a hostile offer (its answer would have to
    /// list them all).
    #[error("more than {MAX_MEDIA} media sections")]
    TooManyMedia,
    /// More lines, or a longer line, than any real offer has.
    #[error("line {line}: over the limit of {MAX_LINES} lines of at most {MAX_LINE} bytes")]
    OverLimit { line: usize },
}

/// Media sections an offer may have (audio, video, a few declined ones).
pub const MAX_MEDIA: usize = 16;
/// Lines an SDP may have, and the length of one (the longest real ones, ICE candidates and
/// crypto keys, are a few hundred bytes).
pub const MAX_LINES: usize = 1024;
pub const MAX_LINE: usize = 2048;

impl SdpError {
    /// Whether the body is well formed but over the limits: a hostile offer, refused with 488
    /// rather than 400.
    pub fn over_limits(&self) -> bool {
        matches!(self, SdpError::TooManyMedia | SdpError::OverLimit { .. })
    }
}

/// Why an offer cannot be answered, or an answer to our offer cannot be used.
/// All of them become `488 Not Acceptable Here` (RFC 3261 §21.4.26) when
/// answering an INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NegotiationError {
    /// The offer has no `m=audio` line with a non-zero port.
    #[error("offer has no active audio stream")]
    NoAudioStream,
    /// The only active audio streams use a transport we cannot terminate
    /// (for example `RTP/SAVP`, which needs SRTP keys).
    #[error("audio stream uses transport {proto:?}; only RTP/AVP is supported")]
    UnsupportedTransport { proto: String },
    /// None of our codecs is in the audio stream.
    #[error("no codec in common with the offer")]
    NoCommonCodec,
    /// RFC 8866 §5.7: an active stream needs a `c=` at media or session level.
    #[error("audio stream {index} has no `c=` line at media or session level")]
    MissingConnection { index: usize },
    /// The `c=` address is a host name or otherwise not an IP address; we do
    /// not resolve names on the media path.
    #[error("`c=` address {address:?} is not an IP address")]
    ConnectionNotIp { address: String },
    /// RFC 3264 §6: the answer must have as many `m=` lines as the offer.
    #[error("answer has {answered} m= lines but the offer had {offered}")]
    MediaCountMismatch { offered: usize, answered: usize },
    /// RFC 3264 §6: the answer's m= line at this index is not the same kind.
    #[error("answer m= line {index} is {answered:?}, offer was {offered:?}")]
    MediaKindMismatch {
        index: usize,
        offered: String,
        answered: String,
    },
    /// The answerer rejected our audio stream with port 0.
    #[error("answer rejected the audio stream (port 0)")]
    AudioRejected,
    /// RFC 3264 §6.1: the answer may only use codecs from the offer.
    #[error("answer uses payload type {payload_type} ({encoding}), which was not offered")]
    CodecNotOffered { payload_type: u8, encoding: String },
    /// An `RTP/SAVP` stream without an `a=crypto` line we can use (RFC 4568: a
    /// supported suite, one inline key, no MKI), or an answer that does not
    /// take the one we offered.
    #[error("no usable SDES a=crypto line on the RTP/SAVP stream")]
    NoUsableCrypto,
}

/// SDES-SRTP settled on a stream (RFC 4568): both directions use `suite`; we
/// encrypt with `ours` and decrypt with `theirs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: Suite,
    pub ours: MasterKey,
    pub theirs: MasterKey,
}

/// Our side of SRTP on a leg: our key, and the suite our offers propose (the one negotiated,
/// so a re-offer to a peer that took `_32` does not switch it to `_80`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSrtp {
    pub key: MasterKey,
    pub suite: Suite,
}

impl LocalSrtp {
    /// A key for a first offer or answer, proposing `AES_CM_128_HMAC_SHA1_80`.
    pub fn new(key: MasterKey) -> LocalSrtp {
        LocalSrtp {
            key,
            suite: Suite::AesCm128HmacSha1_80,
        }
    }
}

/// The profile SRTP runs over.
const SAVP: &str = "RTP/SAVP";
/// The tag of the one `a=crypto` line in our offers.
const OUR_CRYPTO_TAG: u32 = 1;

/// The `a=crypto` lines of a stream that we can use, in the order offered.
fn usable_crypto(m: &MediaDescription) -> impl Iterator<Item = Crypto> + '_ {
    m.attributes
        .iter()
        .filter(|a| a.name.eq_ignore_ascii_case("crypto"))
        .filter_map(|a| a.value.as_deref())
        .filter_map(|v| Crypto::parse(v).ok())
}

/// Whether an offer's audio is SRTP we can answer: its first active audio stream
/// over `RTP/SAVP` carries a usable key (a leg that offers it gets it back).
pub fn offers_srtp(offer: &SessionDescription) -> bool {
    offer
        .media
        .iter()
        .filter(|m| m.kind == MediaKind::Audio && m.port != 0)
        .find(|m| m.proto.eq_ignore_ascii_case(SAVP))
        .is_some_and(|m| usable_crypto(m).next().is_some())
}

/// Media direction, RFC 8866 §6.7 / RFC 3264 §5.1, always seen from the side
/// that wrote the SDP (or, in [`Negotiated`] and [`Accepted`], from our side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// The default when no direction attribute is present.
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The attribute name, as in `a=sendonly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Parses an attribute name (case-insensitively); `None` if it is not a
    /// direction attribute.
    pub fn from_attribute(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| name.eq_ignore_ascii_case(d.as_str()))
    }

    /// Builds a direction from "do we send" / "do we receive".
    pub fn from_flags(send: bool, recv: bool) -> Direction {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Whether the side this direction belongs to sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side this direction belongs to receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The same media flow seen from the other end (RFC 3264 §6.1: an offer
    /// of sendonly is answered recvonly and vice versa).
    pub fn reversed(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }

    /// The flows allowed by both `self` and `other` (both from the same side).
    pub fn restrict(self, other: Direction) -> Direction {
        Direction::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `o=` (RFC 8866 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    /// Kept as text: RFC 8866 only asks for a numeric string, and some
    /// implementations send ids that do not fit 64 bits; we never do
    /// arithmetic on it, only compare it.
    pub session_id: String,
    /// RFC 3264 §8: increases by one with every changed offer or answer.
    pub session_version: u64,
    pub net_type: String,
    pub addr_type: String,
    pub address: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.net_type,
            self.addr_type,
            self.address
        )
    }
}

/// `c=` (RFC 8866 §5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub net_type: String,
    pub addr_type: String,
    /// As written, possibly with a multicast `/ttl[/count]` suffix or a host
    /// name; see [`Connection::ip`].
    pub address: String,
}

impl Connection {
    /// `IN IP4 a.b.c.d` or `IN IP6 x::y` for one of our addresses. An
    /// IPv4-mapped IPv6 address is written as IPv4, which is what the peer
    /// can actually reach.
    pub fn from_ip(ip: IpAddr) -> Connection {
        let ip = ip.to_canonical();
        Connection {
            net_type: "IN".to_owned(),
            addr_type: if ip.is_ipv4() { "IP4" } else { "IP6" }.to_owned(),
            address: ip.to_string(),
        }
    }

    /// The address as an IP, without any multicast `/ttl/count` suffix;
    /// `None` for a host name (which we do not resolve).
    pub fn ip(&self) -> Option<IpAddr> {
        let host = self.address.split('/').next().unwrap_or_default();
        host.parse().ok()
    }

    /// RFC 3264 §8.4: `c=0.0.0.0` is the RFC 2543 way of putting a call on
    /// hold. Some IPv6 stacks use `::` the same way.
    pub fn is_hold(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_unspecified())
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.net_type, self.addr_type, self.address)
    }
}

/// A line that we keep but do not interpret (`t=`, `b=`, `i=`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpLine {
    pub kind: char,
    pub value: String,
}

/// An `a=` line we do not interpret: `a=<name>` or `a=<name>:<value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

impl Attribute {
    fn parse(text: &str) -> Attribute {
        match text.split_once(':') {
            Some((name, value)) => Attribute {
                name: name.to_owned(),
                value: Some(value.to_owned()),
            },
            None => Attribute {
                name: text.to_owned(),
                value: None,
            },
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}:{}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]` (RFC 8866 §6.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u16>,
}

impl RtpMap {
    fn parse(line: usize, text: &str) -> Result<RtpMap, SdpError> {
        let bad = || SdpError::BadRtpmap {
            line,
            found: snippet(text),
        };
        let (pt, rest) = split_first_word(text).ok_or_else(bad)?;
        let payload_type = parse_payload_type(pt).ok_or_else(bad)?;
        let mut parts = rest.split('/');
        let encoding = parts.next().filter(|e| !e.is_empty()).ok_or_else(bad)?;
        let clock_rate = parts
            .next()
            .and_then(|r| r.trim().parse::<u32>().ok())
            .ok_or_else(bad)?;
        let channels = match parts.next() {
            Some(c) => Some(c.trim().parse::<u16>().map_err(|_| bad())?),
            None => None,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(RtpMap {
            payload_type,
            encoding: encoding.to_owned(),
            clock_rate,
            channels,
        })
    }

    fn is_telephone_event_8k(&self) -> bool {
        self.encoding.eq_ignore_ascii_case("telephone-event") && self.clock_rate == 8000
    }

    fn is_comfort_noise(&self) -> bool {
        self.encoding.eq_ignore_ascii_case("CN")
    }
}

impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.payload_type, self.encoding, self.clock_rate
        )?;
        if let Some(c) = self.channels {
            write!(f, "/{c}")?;
        }
        Ok(())
    }
}

/// `a=fmtp:<pt> <parameters>` (RFC 8866 §6.15); parameters kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    pub payload_type: u8,
    pub params: String,
}

/// `a=rtcp:<port> [<nettype> <addrtype> <address>]` (RFC 3605 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpAttr {
    pub port: u16,
    pub connection: Option<Connection>,
}

impl fmt::Display for RtcpAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.port)?;
        if let Some(c) = &self.connection {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

/// The `<media>` field of `m=` (RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
    Text,
    Application,
    Message,
    Image,
    Other(String),
}

impl MediaKind {
    fn parse(s: &str) -> MediaKind {
        const KNOWN: [(&str, MediaKind); 6] = [
            ("audio", MediaKind::Audio),
            ("video", MediaKind::Video),
            ("text", MediaKind::Text),
            ("application", MediaKind::Application),
            ("message", MediaKind::Message),
            ("image", MediaKind::Image),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| s.eq_ignore_ascii_case(name))
            .map_or_else(|| MediaKind::Other(s.to_owned()), |(_, kind)| kind)
    }

    pub fn as_str(&self) -> &str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Text => "text",
            MediaKind::Application => "application",
            MediaKind::Message => "message",
            MediaKind::Image => "image",
            MediaKind::Other(s) => s,
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `m=` section with the attributes we interpret pulled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub kind: MediaKind,
    /// 0 means the stream is rejected or disabled (RFC 3264 §6, §8.2).
    pub port: u16,
    /// The `/<number of ports>` suffix, if any.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `udptl`, ...
    pub proto: String,
    /// The `<fmt>` list as written. For RTP protocols each one has been
    /// checked to be a payload type; see [`MediaDescription::payload_types`].
    pub formats: Vec<String>,
    /// Media-level `c=`, overriding the session-level one.
    pub connection: Option<Connection>,
    pub rtpmaps: Vec<RtpMap>,
    pub fmtps: Vec<Fmtp>,
    pub ptime: Option<u32>,
    pub maxptime: Option<u32>,
    /// Media-level direction attribute, overriding the session-level one.
    pub direction: Option<Direction>,
    pub rtcp: Option<RtcpAttr>,
    /// Other `a=` lines, in order.
    pub attributes: Vec<Attribute>,
    /// Other lines (`i=`, `b=`, `k=`, extra `c=`, unknown letters), in order.
    pub other: Vec<SdpLine>,
}

impl MediaDescription {
    fn parse_m_line(line: usize, text: &str) -> Result<MediaDescription, SdpError> {
        let bad = || SdpError::BadMediaLine {
            line,
            found: snippet(text),
        };
        let mut fields = text.split_ascii_whitespace();
        let kind = fields.next().ok_or_else(bad)?;
        let port_field = fields.next().ok_or_else(bad)?;
        let proto = fields.next().ok_or_else(bad)?;
        let formats: Vec<String> = fields.map(str::to_owned).collect();

        let bad_port = || SdpError::BadPort {
            line,
            found: snippet(port_field),
        };
        let (port, port_count) = match port_field.split_once('/') {
            Some((p, n)) => (
                p.parse::<u16>().map_err(|_| bad_port())?,
                Some(n.parse::<u16>().map_err(|_| bad_port())?),
            ),
            None => (port_field.parse::<u16>().map_err(|_| bad_port())?, None),
        };
        if proto_is_rtp(proto) {
            if let Some(bad_fmt) = formats.iter().find(|f| parse_payload_type(f).is_none()) {
                return Err(SdpError::BadPayloadType {
                    line,
                    found: snippet(bad_fmt),
                });
            }
        }
        if formats.is_empty() && port != 0 {
            return Err(SdpError::NoFormats { line });
        }
        Ok(MediaDescription {
            kind: MediaKind::parse(kind),
            port,
            port_count,
            proto: proto.to_owned(),
            formats,
            connection: None,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            ptime: None,
            maxptime: None,
            direction: None,
            rtcp: None,
            attributes: Vec::new(),
            other: Vec::new(),
        })
    }

    fn apply_attribute(&mut self, line: usize, text: &str) -> Result<(), SdpError> {
        let (name, value) = match text.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (text, None),
        };
        let rtp = self.is_rtp();
        match (name.to_ascii_lowercase().as_str(), value) {
            // A malformed rtpmap (RFC 4475's `a=rtpmap:31 LPC` has no clock rate) makes only
            // that payload type unusable, not the whole description: keep it as an attribute.
            ("rtpmap", Some(v)) if rtp => match RtpMap::parse(line, v) {
                Ok(map) => self.rtpmaps.push(map),
                Err(_) => self.attributes.push(Attribute::parse(text)),
            },
            ("fmtp", Some(v)) if rtp => {
                let bad = || SdpError::BadFmtp {
                    line,
                    found: snippet(v),
                };
                let (pt, params) = split_first_word(v).unwrap_or((v.trim(), ""));
                let payload_type = parse_payload_type(pt).ok_or_else(bad)?;
                self.fmtps.push(Fmtp {
                    payload_type,
                    params: params.to_owned(),
                });
            }
            ("ptime", Some(v)) => self.ptime = Some(parse_millis(line, "ptime", v)?),
            ("maxptime", Some(v)) => self.maxptime = Some(parse_millis(line, "maxptime", v)?),
            ("rtcp", Some(v)) => self.rtcp = Some(parse_rtcp(line, v)?),
            (_, None) if Direction::from_attribute(name).is_some() => {
                self.direction = Direction::from_attribute(name);
            }
            _ => self.attributes.push(Attribute::parse(text)),
        }
        Ok(())
    }

    /// Whether the transport is RTP-based (`RTP/AVP`, `RTP/SAVP`,
    /// `UDP/TLS/RTP/SAVPF`, ...), so that formats are payload types.
    pub fn is_rtp(&self) -> bool {
        proto_is_rtp(&self.proto)
    }

    /// The payload types of the `m=` line, in the offerer's preference order;
    /// empty for non-RTP streams.
    pub fn payload_types(&self) -> Vec<u8> {
        if !self.is_rtp() {
            return Vec::new();
        }
        self.formats
            .iter()
            .filter_map(|f| parse_payload_type(f))
            .collect()
    }

    /// The `a=rtpmap` for `pt`, if present.
    pub fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == pt)
    }

    /// The `a=fmtp` parameters for `pt`, if present.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|f| f.payload_type == pt)
            .map(|f| f.params.as_str())
    }

    /// What `pt` carries: its `a=rtpmap`, or the RFC 3551 static assignment
    /// (so 0 is PCMU/8000 and 8 is PCMA/8000 without any rtpmap).
    pub fn encoding(&self, pt: u8) -> Option<RtpMap> {
        self.rtpmap(pt).cloned().or_else(|| static_encoding(pt))
    }

    /// The first payload type carrying `telephone-event/8000` (RFC 4733).
    pub fn telephone_event(&self) -> Option<u8> {
        self.payload_types().into_iter().find(|&pt| {
            self.encoding(pt)
                .is_some_and(|map| map.is_telephone_event_8k())
        })
    }

    /// A rejected copy of this stream for an answer (RFC 3264 §6): same
    /// media and transport, port 0, and at least one format.
    fn rejected(&self) -> MediaDescription {
        let mut formats = self.formats.clone();
        if formats.is_empty() && self.is_rtp() {
            formats.push("0".to_owned());
        }
        MediaDescription {
            kind: self.kind.clone(),
            port: 0,
            port_count: None,
            proto: self.proto.clone(),
            formats,
            connection: None,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            ptime: None,
            maxptime: None,
            direction: None,
            rtcp: None,
            attributes: Vec::new(),
            other: Vec::new(),
        }
    }
}

impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.kind, self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        write!(f, " {}", self.proto)?;
        for fmt_ in &self.formats {
            write!(f, " {fmt_}")?;
        }
        f.write_str("\r\n")?;

        let mut other: Vec<&SdpLine> = self.other.iter().collect();
        other.sort_by_key(|l| line_rank(l.kind));
        for l in other.iter().filter(|l| line_rank(l.kind) < RANK_C) {
            write!(f, "{}={}\r\n", l.kind, l.value)?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        for l in other.iter().filter(|l| line_rank(l.kind) >= RANK_C) {
            write!(f, "{}={}\r\n", l.kind, l.value)?;
        }

        // rtpmap/fmtp in payload-type order, then any that name no listed pt.
        let mut listed = self.payload_types();
        let mut seen = [false; 128];
        listed.retain(|&pt| !std::mem::replace(&mut seen[usize::from(pt & 0x7f)], true));
        for &pt in &listed {
            for m in self.rtpmaps.iter().filter(|m| m.payload_type == pt) {
                write!(f, "a=rtpmap:{m}\r\n")?;
            }
            for p in self.fmtps.iter().filter(|p| p.payload_type == pt) {
                write!(f, "a=fmtp:{} {}\r\n", p.payload_type, p.params)?;
            }
        }
        for m in self
            .rtpmaps
            .iter()
            .filter(|m| !listed.contains(&m.payload_type))
        {
            write!(f, "a=rtpmap:{m}\r\n")?;
        }
        for p in self
            .fmtps
            .iter()
            .filter(|p| !listed.contains(&p.payload_type))
        {
            write!(f, "a=fmtp:{} {}\r\n", p.payload_type, p.params)?;
        }
        if let Some(p) = self.ptime {
            write!(f, "a=ptime:{p}\r\n")?;
        }
        if let Some(p) = self.maxptime {
            write!(f, "a=maxptime:{p}\r\n")?;
        }
        if let Some(r) = &self.rtcp {
            write!(f, "a=rtcp:{r}\r\n")?;
        }
        for a in &self.attributes {
            write!(f, "a={a}\r\n")?;
        }
        if let Some(d) = self.direction {
            write!(f, "a={d}\r\n")?;
        }
        Ok(())
    }
}

/// A parsed SDP body (RFC 8866 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    pub session_name: String,
    /// Session-level `c=`, the default for every media section.
    pub connection: Option<Connection>,
    /// Session-level direction attribute, the default for every media section.
    pub direction: Option<Direction>,
    /// Other session-level `a=` lines, in order.
    pub attributes: Vec<Attribute>,
    /// Other session-level lines (`t=`, `b=`, `i=`, unknown letters), in
    /// order. `t=0 0` is written out if there is no `t=` here, since RFC 8866
    /// §5.9 makes it mandatory.
    pub other: Vec<SdpLine>,
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses an SDP body. CRLF, LF-only and CR-only line ends are accepted;
    /// bytes that are not UTF-8 (RFC 8866 allows other charsets in free-text
    /// fields) are replaced rather than rejected.
    pub fn parse(input: &[u8]) -> Result<SessionDescription, SdpError> {
        Self::parse_text(&String::from_utf8_lossy(input))
    }

    fn parse_text(text: &str) -> Result<SessionDescription, SdpError> {
        let mut lines = text
            .split('\n')
            .enumerate()
            .flat_map(|(i, l)| l.split('\r').map(move |part| (i + 1, part)))
            .filter(|(_, l)| !l.trim().is_empty());

        let (_, first) = lines.next().ok_or(SdpError::Empty)?;
        let version = first
            .strip_prefix("v=")
            .ok_or_else(|| SdpError::MissingVersion {
                found: snippet(first),
            })?;
        if version.trim() != "0" {
            return Err(SdpError::UnsupportedVersion {
                found: snippet(version),
            });
        }

        let mut origin = None;
        let mut session_name = None;
        let mut connection = None;
        let mut direction = None;
        let mut attributes = Vec::new();
        let mut other = Vec::new();
        let mut media: Vec<MediaDescription> = Vec::new();

        for (n, (line, text)) in lines.enumerate() {
            if n >= MAX_LINES || text.len() > MAX_LINE {
                return Err(SdpError::OverLimit { line });
            }
            let (kind, value) = split_line(line, text)?;
            if kind == 'm' {
                if media.len() == MAX_MEDIA {
                    return Err(SdpError::TooManyMedia);
                }
                media.push(MediaDescription::parse_m_line(line, value)?);
                continue;
            }
            if let Some(m) = media.last_mut() {
                match kind {
                    'v' | 'o' | 's' => return Err(SdpError::MisplacedLine { line, kind }),
                    'c' if m.connection.is_none() => {
                        m.connection = Some(parse_connection(line, value)?);
                    }
                    'a' => m.apply_attribute(line, value)?,
                    _ => m.other.push(SdpLine {
                        kind,
                        value: value.to_owned(),
                    }),
                }
                continue;
            }
            match kind {
                'v' => return Err(SdpError::DuplicateLine { line, kind }),
                'o' if origin.is_some() => return Err(SdpError::DuplicateLine { line, kind }),
                'o' => origin = Some(parse_origin(line, value)?),
                's' if session_name.is_some() => {
                    return Err(SdpError::DuplicateLine { line, kind })
                }
                's' => session_name = Some(value.to_owned()),
                'c' if connection.is_some() => return Err(SdpError::DuplicateLine { line, kind }),
                'c' => connection = Some(parse_connection(line, value)?),
                'a' => match Direction::from_attribute(value) {
                    Some(d) => direction = Some(d),
                    None => attributes.push(Attribute::parse(value)),
                },
                _ => other.push(SdpLine {
                    kind,
                    value: value.to_owned(),
                }),
            }
        }

        Ok(SessionDescription {
            origin: origin.ok_or(SdpError::MissingOrigin)?,
            session_name: session_name.ok_or(SdpError::MissingSessionName)?,
            connection,
            direction,
            attributes,
            other,
            media,
        })
    }

    /// The direction in force for media section `index`: its own attribute,
    /// else the session-level one, else sendrecv (RFC 8866 §6.7).
    pub fn media_direction(&self, index: usize) -> Direction {
        self.media
            .get(index)
            .and_then(|m| m.direction)
            .or(self.direction)
            .unwrap_or_default()
    }

    /// The `c=` in force for media section `index`: its own, else the
    /// session-level one (RFC 8866 §5.7).
    pub fn media_connection(&self, index: usize) -> Option<&Connection> {
        self.media
            .get(index)
            .and_then(|m| m.connection.as_ref())
            .or(self.connection.as_ref())
    }
}

impl FromStr for SessionDescription {
    type Err = SdpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_text(s)
    }
}

impl fmt::Display for SessionDescription {
    /// Writes the body with CRLF line ends (RFC 8866 §5) in the line order
    /// RFC 8866 §5 prescribes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=0\r\n")?;
        write!(f, "o={}\r\n", self.origin)?;
        let name = if self.session_name.is_empty() {
            "-"
        } else {
            &self.session_name
        };
        write!(f, "s={name}\r\n")?;

        let mut other: Vec<&SdpLine> = self.other.iter().collect();
        other.sort_by_key(|l| line_rank(l.kind));
        let has_timing = other.iter().any(|l| l.kind == 't');
        for l in other.iter().filter(|l| line_rank(l.kind) < RANK_C) {
            write!(f, "{}={}\r\n", l.kind, l.value)?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        let mut timing_written = has_timing;
        for l in other.iter().filter(|l| line_rank(l.kind) >= RANK_C) {
            if !timing_written && line_rank(l.kind) > RANK_T {
                f.write_str("t=0 0\r\n")?;
                timing_written = true;
            }
            write!(f, "{}={}\r\n", l.kind, l.value)?;
        }
        if !timing_written {
            f.write_str("t=0 0\r\n")?;
        }
        for a in &self.attributes {
            write!(f, "a={a}\r\n")?;
        }
        if let Some(d) = self.direction {
            write!(f, "a={d}\r\n")?;
        }
        for m in &self.media {
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

const RANK_C: u8 = 7;
const RANK_T: u8 = 9;

/// Position of a line type in the order RFC 8866 §5 prescribes; unknown
/// letters go just before the attributes.
fn line_rank(kind: char) -> u8 {
    match kind {
        'v' => 0,
        'o' => 1,
        's' => 2,
        'i' => 3,
        'u' => 4,
        'e' => 5,
        'p' => 6,
        'c' => RANK_C,
        'b' => 8,
        't' => RANK_T,
        'r' => 10,
        'z' => 11,
        'a' => 13,
        'm' => 14,
        _ => 12,
    }
}

fn split_line(line: usize, text: &str) -> Result<(char, &str), SdpError> {
    let malformed = || SdpError::MalformedLine {
        line,
        found: snippet(text),
    };
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.get(1)) {
        (Some(&k), Some(b'=')) if k.is_ascii_alphabetic() => {
            let value = text.get(2..).ok_or_else(malformed)?;
            Ok((char::from(k), value))
        }
        _ => Err(malformed()),
    }
}

fn parse_origin(line: usize, text: &str) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let [username, session_id, version, net_type, addr_type, address] = fields[..] else {
        return Err(SdpError::BadOrigin {
            line,
            found: snippet(text),
        });
    };
    let session_version = version
        .parse::<u64>()
        .map_err(|_| SdpError::BadSessionVersion {
            line,
            found: snippet(version),
        })?;
    Ok(Origin {
        username: username.to_owned(),
        session_id: session_id.to_owned(),
        session_version,
        net_type: net_type.to_owned(),
        addr_type: addr_type.to_owned(),
        address: address.to_owned(),
    })
}

fn parse_connection(line: usize, text: &str) -> Result<Connection, SdpError> {
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let [net_type, addr_type, address] = fields[..] else {
        return Err(SdpError::BadConnection {
            line,
            found: snippet(text),
        });
    };
    Ok(Connection {
        net_type: net_type.to_owned(),
        addr_type: addr_type.to_owned(),
        address: address.to_owned(),
    })
}

fn parse_rtcp(line: usize, text: &str) -> Result<RtcpAttr, SdpError> {
    let bad = || SdpError::BadRtcp {
        line,
        found: snippet(text),
    };
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    match fields[..] {
        [port] => Ok(RtcpAttr {
            port: port.parse().map_err(|_| bad())?,
            connection: None,
        }),
        [port, net_type, addr_type, address] => Ok(RtcpAttr {
            port: port.parse().map_err(|_| bad())?,
            connection: Some(Connection {
                net_type: net_type.to_owned(),
                addr_type: addr_type.to_owned(),
                address: address.to_owned(),
            }),
        }),
        _ => Err(bad()),
    }
}

/// `a=ptime`/`a=maxptime`. RFC 8866 §6.4 allows a decimal value; it is
/// rounded to whole milliseconds, which is all the media engine can use.
fn parse_millis(line: usize, name: &'static str, text: &str) -> Result<u32, SdpError> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<u32>() {
        return Ok(ms);
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1_000_000.0).contains(&v) && !t.contains(['e', 'E']) => {
            // Bounded above, so the cast cannot truncate.
            Ok(v.round() as u32)
        }
        _ => Err(SdpError::BadPacketTime {
            line,
            name,
            found: snippet(text),
        }),
    }
}

/// Splits `"<word> <rest>"`; `None` when there is no second part.
fn split_first_word(text: &str) -> Option<(&str, &str)> {
    let t = text.trim();
    let (first, rest) = t.split_once(|c: char| c.is_ascii_whitespace())?;
    Some((first, rest.trim()))
}

fn parse_payload_type(s: &str) -> Option<u8> {
    s.trim().parse::<u8>().ok().filter(|pt| *pt <= 127)
}

fn proto_is_rtp(proto: &str) -> bool {
    proto.split('/').any(|p| p.eq_ignore_ascii_case("RTP"))
}

/// RFC 3551 §6 static payload types (audio ones and MPA), for streams that
/// list them without an rtpmap.
fn static_encoding(pt: u8) -> Option<RtpMap> {
    let (encoding, clock_rate, channels) = match pt {
        0 => ("PCMU", 8000, None),
        3 => ("GSM", 8000, None),
        4 => ("G723", 8000, None),
        5 => ("DVI4", 8000, None),
        6 => ("DVI4", 16000, None),
        7 => ("LPC", 8000, None),
        8 => ("PCMA", 8000, None),
        9 => ("G722", 8000, None),
        10 => ("L16", 44100, Some(2)),
        11 => ("L16", 44100, None),
        12 => ("QCELP", 8000, None),
        13 => ("CN", 8000, None),
        14 => ("MPA", 90000, None),
        15 => ("G728", 8000, None),
        16 => ("DVI4", 11025, None),
        17 => ("DVI4", 22050, None),
        18 => ("G729", 8000, None),
        _ => return None,
    };
    Some(RtpMap {
        payload_type: pt,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

/// The codecs the media engine can anchor and record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// RFC 3551 encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// RFC 3551 §6 static payload type, used in our own offers.
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    pub fn clock_rate(self) -> u32 {
        8000
    }

    /// Parses an encoding name such as `PCMU` (case-insensitive), e.g. from
    /// configuration.
    pub fn from_name(name: &str) -> Option<Codec> {
        [Codec::Pcmu, Codec::Pcma]
            .into_iter()
            .find(|c| name.eq_ignore_ascii_case(c.encoding_name()))
    }

    /// The codec an rtpmap (explicit or static) stands for: right name, 8 kHz,
    /// mono.
    pub fn from_rtpmap(map: &RtpMap) -> Option<Codec> {
        Codec::from_name(&map.encoding)
            .filter(|c| map.clock_rate == c.clock_rate() && map.channels.unwrap_or(1) == 1)
    }

    fn rtpmap(self, payload_type: u8) -> RtpMap {
        RtpMap {
            payload_type,
            encoding: self.encoding_name().to_owned(),
            clock_rate: self.clock_rate(),
            channels: None,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding_name())
    }
}

/// Our codec preference, most preferred first. Dereferences to `[Codec]`, so
/// `&prefs` can be passed wherever `&[Codec]` is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodecPrefs(pub Vec<Codec>);

impl Default for CodecPrefs {
    /// PCMU then PCMA: both are mandatory-to-implement for most trunks, and
    /// either one records losslessly to the same WAV sample format.
    fn default() -> Self {
        CodecPrefs(vec![Codec::Pcmu, Codec::Pcma])
    }
}

impl Deref for CodecPrefs {
    type Target = [Codec];

    fn deref(&self) -> &[Codec] {
        &self.0
    }
}

/// Our side of a media session: where we receive RTP and what goes in `o=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Where we receive RTP (written in `c=` and `o=`).
    pub addr: IpAddr,
    /// Our RTP port; RTCP is on `port + 1` (RFC 3550 §11).
    pub port: u16,
    /// Stays the same for the whole dialog (RFC 8866 §5.2).
    pub session_id: u64,
    /// Bumped with [`next_version`] for every changed offer (RFC 3264 §8).
    pub session_version: u64,
    /// The `o=` username; `-` when empty.
    pub username: String,
    /// Our SDES key when this leg runs SRTP: offers and answers are then
    /// `RTP/SAVP` with it in `a=crypto`; `None` is plain `RTP/AVP`.
    pub srtp: Option<LocalSrtp>,
}

impl LocalMedia {
    /// Bumps `session_version` for a new, changed offer or answer within the
    /// same session and returns the new value.
    pub fn bump_version(&mut self) -> u64 {
        self.session_version = next_version(self.session_version);
        self.session_version
    }

    fn origin(&self) -> Origin {
        let username: String = self
            .username
            .chars()
            .map(|c| if c.is_whitespace() { '-' } else { c })
            .collect();
        let conn = Connection::from_ip(self.addr);
        Origin {
            username: if username.is_empty() {
                "-".to_owned()
            } else {
                username
            },
            session_id: self.session_id.to_string(),
            session_version: self.session_version,
            net_type: conn.net_type,
            addr_type: conn.addr_type,
            address: conn.address,
        }
    }

    fn session(&self, media: Vec<MediaDescription>) -> SessionDescription {
        SessionDescription {
            origin: self.origin(),
            session_name: "-".to_owned(),
            connection: Some(Connection::from_ip(self.addr)),
            direction: None,
            attributes: Vec::new(),
            other: vec![SdpLine {
                kind: 't',
                value: "0 0".to_owned(),
            }],
            media,
        }
    }
}

/// The origin version for the next changed offer in a session (RFC 3264 §8:
/// "incremented by one"). Wraps at `u64::MAX`, which no dialog reaches.
pub(crate) fn next_version(current: u64) -> u64 {
    current.wrapping_add(1)
}

/// The result of answering an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The SDP to send back.
    pub answer: SessionDescription,
    pub codec: Codec,
    /// The offerer's payload type number for `codec`, used both ways.
    pub payload_type: u8,
    /// The offerer's `telephone-event/8000` payload type, if offered.
    pub dtmf_pt: Option<u8>,
    pub ptime: u32,
    /// Where to send RTP; `None` when the stream has port 0 or `c=0.0.0.0`.
    pub remote_rtp: Option<SocketAddr>,
    /// Our direction as written in the answer (SendOnly = we send only).
    pub direction: Direction,
    /// The offerer does not want to receive media: `a=sendonly`,
    /// `a=inactive` or `c=0.0.0.0`.
    pub remote_hold: bool,
    /// The stream is SRTP with these keys.
    pub srtp: Option<SrtpKeys>,
}

/// What an answer to one of our offers settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub codec: Codec,
    /// The answerer's payload type for `codec`, which we send with.
    pub payload_type: u8,
    /// The answerer's `telephone-event/8000` payload type, if we offered
    /// DTMF and the answer kept it.
    pub dtmf_pt: Option<u8>,
    pub ptime: u32,
    /// Where to send RTP; `None` when the answer has `c=0.0.0.0`.
    pub remote_rtp: Option<SocketAddr>,
    /// Our direction: what we offered, narrowed by what the answer allows.
    pub direction: Direction,
    /// We offered to send but the answerer does not want to receive.
    pub remote_hold: bool,
    /// We offered SRTP and the answer took it, with these keys.
    pub srtp: Option<SrtpKeys>,
}

/// Answers `offer` with a sendrecv willingness on our side; see
/// [`answer_with_direction`].
pub fn answer(
    offer: &SessionDescription,
    local: &LocalMedia,
    prefs: &[Codec],
) -> Result<Negotiated, NegotiationError> {
    answer_with_direction(offer, local, prefs, Direction::SendRecv)
}

/// Answers `offer` (RFC 3264 §6).
///
/// The first active `RTP/AVP` audio stream is used; every other stream is
/// rejected with port 0, keeping the offer's order (§6). The codec is the
/// first of `prefs` that the stream carries, under the offerer's payload type
/// number (§6.1). `telephone-event/8000` is kept with its number and `fmtp`.
/// The direction is the offer's, reversed (§6.1), narrowed by `local`; an
/// offer with `c=0.0.0.0` counts as not receiving (§8.4).
pub(crate) fn answer_with_direction(
    offer: &SessionDescription,
    local: &LocalMedia,
    prefs: &[Codec],
    local_direction: Direction,
) -> Result<Negotiated, NegotiationError> {
    let index = select_audio(offer, local.srtp.is_some())?;
    let Some(stream) = offer.media.get(index) else {
        return Err(NegotiationError::NoAudioStream);
    };
    // RFC 4568 §6.1: the answer takes the first offered line it can use,
    // echoing its tag and suite with our own key.
    let srtp = match local.srtp.map(|l| l.key) {
        Some(ours) => {
            let theirs = usable_crypto(stream)
                .next()
                .ok_or(NegotiationError::NoUsableCrypto)?;
            Some((theirs.tag, theirs.suite, theirs.key, ours))
        }
        None => None,
    };

    let (codec, payload_type) = prefs
        .iter()
        .find_map(|&codec| {
            stream
                .payload_types()
                .into_iter()
                .find(|&pt| {
                    stream.encoding(pt).and_then(|map| Codec::from_rtpmap(&map)) == Some(codec)
                })
                .map(|pt| (codec, pt))
        })
        .ok_or(NegotiationError::NoCommonCodec)?;

    let dtmf = stream
        .telephone_event()
        .map(|pt| (pt, stream.fmtp(pt).map(str::to_owned)));

    let (remote_ip, held_by_address) = remote_ip(offer, index)?;
    let offered = offer.media_direction(index);
    let offered = if held_by_address {
        Direction::from_flags(offered.sends(), false)
    } else {
        offered
    };
    let direction = offered.reversed().restrict(local_direction);
    let remote_rtp = (!held_by_address).then(|| SocketAddr::new(remote_ip, stream.port));

    let ptime = effective_ptime(stream);
    let mut audio = audio_stream(
        local.port,
        codec,
        payload_type,
        dtmf.as_ref().map(|(pt, fmtp)| (*pt, fmtp.as_deref())),
        ptime,
        direction,
    );
    if let Some((tag, suite, _, ours)) = srtp {
        add_crypto(&mut audio, tag, suite, ours);
    }

    let media = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if i == index {
                audio.clone()
            } else {
                m.rejected()
            }
        })
        .collect();

    Ok(Negotiated {
        answer: local.session(media),
        codec,
        payload_type,
        dtmf_pt: dtmf.map(|(pt, _)| pt),
        ptime,
        remote_rtp,
        direction,
        remote_hold: !offered.receives(),
        srtp: srtp.map(|(_, suite, theirs, ours)| SrtpKeys {
            suite,
            ours,
            theirs,
        }),
    })
}

/// Makes `m` an `RTP/SAVP` stream keyed with `key` (RFC 4568 §9.1).
fn add_crypto(m: &mut MediaDescription, tag: u32, suite: Suite, key: MasterKey) {
    m.proto = SAVP.to_owned();
    let line = Crypto { tag, suite, key };
    m.attributes.push(Attribute {
        name: "crypto".to_owned(),
        value: Some(line.to_attr()),
    });
}

/// Builds one of our own offers: a single `RTP/AVP` audio stream with the
/// codecs of `prefs` under their static payload types, optional
/// `telephone-event/8000` on `dtmf_pt` with events 0-16, `a=ptime:20` and
/// `direction` (SendOnly to put the peer on hold, SendRecv to resume, RFC 3264
/// §8.4). An empty `prefs` means [`CodecPrefs::default`]. Call
/// [`LocalMedia::bump_version`] first when this offer changes the session.
pub fn offer(
    local: &LocalMedia,
    prefs: &[Codec],
    dtmf_pt: Option<u8>,
    direction: Direction,
) -> SessionDescription {
    let default_prefs = CodecPrefs::default();
    let prefs = if prefs.is_empty() {
        &default_prefs[..]
    } else {
        prefs
    };
    let mut codecs: Vec<Codec> = Vec::new();
    for &c in prefs {
        if !codecs.contains(&c) {
            codecs.push(c);
        }
    }
    // A DTMF payload type must be dynamic and must not collide with a codec.
    let dtmf_pt = dtmf_pt
        .filter(|pt| (96..=127).contains(pt))
        .filter(|pt| codecs.iter().all(|c| c.static_payload_type() != *pt));

    let mut media = MediaDescription {
        kind: MediaKind::Audio,
        port: local.port,
        port_count: None,
        proto: "RTP/AVP".to_owned(),
        formats: Vec::new(),
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: Some(DEFAULT_PTIME_MS),
        maxptime: None,
        direction: Some(direction),
        rtcp: None,
        attributes: Vec::new(),
        other: Vec::new(),
    };
    for c in codecs {
        let pt = c.static_payload_type();
        media.formats.push(pt.to_string());
        media.rtpmaps.push(c.rtpmap(pt));
    }
    if let Some(pt) = dtmf_pt {
        add_telephone_event(&mut media, pt, Some(DEFAULT_DTMF_EVENTS));
    }
    if let Some(l) = local.srtp {
        add_crypto(&mut media, OUR_CRYPTO_TAG, l.suite, l.key);
    }
    local.session(vec![media])
}

/// Reads the answer to one of our offers (RFC 3264 §7).
///
/// The answer must keep the offer's m= lines; our audio stream must not be
/// rejected; its first codec (ignoring telephone-event and CN) must be one we
/// offered. We send with the answer's payload type numbers, which is what the
/// answerer expects to receive (§6.1).
pub(crate) fn accept_answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<Accepted, NegotiationError> {
    if offer.media.len() != answer.media.len() {
        return Err(NegotiationError::MediaCountMismatch {
            offered: offer.media.len(),
            answered: answer.media.len(),
        });
    }
    let savp = offer
        .media
        .iter()
        .any(|m| m.kind == MediaKind::Audio && m.port != 0 && m.proto.eq_ignore_ascii_case(SAVP));
    let index = select_audio(offer, savp)?;
    let (Some(ours), Some(theirs)) = (offer.media.get(index), answer.media.get(index)) else {
        return Err(NegotiationError::NoAudioStream);
    };
    if theirs.kind != ours.kind {
        return Err(NegotiationError::MediaKindMismatch {
            index,
            offered: ours.kind.to_string(),
            answered: theirs.kind.to_string(),
        });
    }
    if !usable_port(theirs.port) {
        return Err(NegotiationError::AudioRejected);
    }

    let offered_codecs: Vec<Codec> = ours
        .payload_types()
        .into_iter()
        .filter_map(|pt| ours.encoding(pt).and_then(|m| Codec::from_rtpmap(&m)))
        .collect();
    let mut chosen = None;
    for pt in theirs.payload_types() {
        let map = theirs.encoding(pt);
        if map
            .as_ref()
            .is_some_and(|m| m.is_telephone_event_8k() || m.is_comfort_noise())
        {
            continue;
        }
        match map.as_ref().and_then(Codec::from_rtpmap) {
            Some(codec) if offered_codecs.contains(&codec) => {
                chosen = Some((codec, pt));
                break;
            }
            _ => {
                return Err(NegotiationError::CodecNotOffered {
                    payload_type: pt,
                    encoding: map.map_or_else(
                        || "unknown".to_owned(),
                        |m| format!("{}/{}", m.encoding, m.clock_rate),
                    ),
                })
            }
        }
    }
    let (codec, payload_type) = chosen.ok_or(NegotiationError::NoCommonCodec)?;

    let dtmf_pt = ours
        .telephone_event()
        .and_then(|_| theirs.telephone_event());

    let (remote_ip, held_by_address) = remote_ip(answer, index)?;
    let answered = answer.media_direction(index);
    let answered = if held_by_address {
        Direction::from_flags(answered.sends(), false)
    } else {
        answered
    };
    let ours_dir = offer.media_direction(index);
    let direction = ours_dir.restrict(answered.reversed());
    // Our offer's key, and the answer's line for its tag and suite (RFC 4568 §7.1.3).
    let srtp = match usable_crypto(ours).next() {
        Some(mine) if savp => {
            let theirs = usable_crypto(theirs)
                .find(|c| c.tag == mine.tag && c.suite == mine.suite)
                .filter(|_| theirs.proto.eq_ignore_ascii_case(SAVP))
                .ok_or(NegotiationError::NoUsableCrypto)?;
            Some(SrtpKeys {
                suite: mine.suite,
                ours: mine.key,
                theirs: theirs.key,
            })
        }
        _ => None,
    };

    Ok(Accepted {
        codec,
        payload_type,
        dtmf_pt,
        ptime: effective_ptime(theirs),
        remote_rtp: (!held_by_address).then(|| SocketAddr::new(remote_ip, theirs.port)),
        direction,
        remote_hold: ours_dir.sends() && !answered.receives(),
        srtp,
    })
}

/// Index of the stream we negotiate: the first active audio stream over
/// `RTP/SAVP` when `srtp`, else over plain `RTP/AVP`.
fn select_audio(sdp: &SessionDescription, srtp: bool) -> Result<usize, NegotiationError> {
    let proto = if srtp { SAVP } else { "RTP/AVP" };
    let mut active = sdp
        .media
        .iter()
        .enumerate()
        .filter(|(_, m)| m.kind == MediaKind::Audio && usable_port(m.port))
        .peekable();
    let first_proto = match active.peek() {
        Some((_, m)) => m.proto.clone(),
        None => return Err(NegotiationError::NoAudioStream),
    };
    active
        .find(|(_, m)| m.proto.eq_ignore_ascii_case(proto))
        .map(|(i, _)| i)
        .ok_or(NegotiationError::UnsupportedTransport { proto: first_proto })
}

/// Whether a peer's RTP port can be sent to: not 0 (a declined stream), not a privileged port
/// (1-1023: RTP is never there, and a hostile offer could aim our relay at a service, a
/// reflection), not 65535 (no room for RTCP after it).
fn usable_port(port: u16) -> bool {
    (1024..u16::MAX).contains(&port)
}

/// The remote IP of media section `index` and whether it is the RFC 2543
/// hold address.
fn remote_ip(sdp: &SessionDescription, index: usize) -> Result<(IpAddr, bool), NegotiationError> {
    let conn = sdp
        .media_connection(index)
        .ok_or(NegotiationError::MissingConnection { index })?;
    let ip = conn.ip().ok_or_else(|| NegotiationError::ConnectionNotIp {
        address: snippet(&conn.address),
    })?;
    Ok((ip, ip.is_unspecified()))
}

/// The offered `ptime` (20 ms if absent or zero), capped by `maxptime`.
fn effective_ptime(m: &MediaDescription) -> u32 {
    let ptime = m.ptime.filter(|p| *p > 0).unwrap_or(DEFAULT_PTIME_MS);
    match m.maxptime.filter(|p| *p > 0) {
        Some(max) => ptime.min(max),
        None => ptime,
    }
}

fn add_telephone_event(media: &mut MediaDescription, pt: u8, fmtp: Option<&str>) {
    media.formats.push(pt.to_string());
    media.rtpmaps.push(RtpMap {
        payload_type: pt,
        encoding: "telephone-event".to_owned(),
        clock_rate: 8000,
        channels: None,
    });
    if let Some(params) = fmtp {
        media.fmtps.push(Fmtp {
            payload_type: pt,
            params: params.to_owned(),
        });
    }
}

fn audio_stream(
    port: u16,
    codec: Codec,
    payload_type: u8,
    dtmf: Option<(u8, Option<&str>)>,
    ptime: u32,
    direction: Direction,
) -> MediaDescription {
    let mut media = MediaDescription {
        kind: MediaKind::Audio,
        port,
        port_count: None,
        proto: "RTP/AVP".to_owned(),
        formats: vec![payload_type.to_string()],
        connection: None,
        rtpmaps: vec![codec.rtpmap(payload_type)],
        fmtps: Vec::new(),
        ptime: Some(ptime),
        maxptime: None,
        direction: Some(direction),
        rtcp: None,
        attributes: Vec::new(),
        other: Vec::new(),
    };
    if let Some((pt, fmtp)) = dtmf {
        add_telephone_event(&mut media, pt, fmtp);
    }
    media
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn parse(s: &str) -> SessionDescription {
        SessionDescription::parse(s.as_bytes()).expect("test SDP parses")
    }

    fn crlf(s: &str) -> String {
        s.lines().map(|l| format!("{l}\r\n")).collect()
    }

    fn local() -> LocalMedia {
        LocalMedia {
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            port: 40000,
            session_id: 4242,
            session_version: 1,
            username: "screenpop".to_owned(),
            srtp: None,
        }
    }

    const ASTERISK_OFFER: &str = "v=0
o=- 1673439162 1673439162 IN IP4 203.0.113.10
s=Asterisk
c=IN IP4 203.0.113.10
t=0 0
m=audio 18732 RTP/AVP 8 0 3 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:3 GSM/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
";

    const FREESWITCH_OFFER: &str = "v=0
o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.20
s=FreeSWITCH
c=IN IP4 198.51.100.20
t=0 0
m=audio 24576 RTP/AVP 102 9 0 8 101 13
a=rtpmap:102 opus/48000/2
a=fmtp:102 useinbandfec=1; maxaveragebitrate=30000; maxplaybackrate=48000; ptime=20; minptime=10; maxptime=40
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=rtpmap:13 CN/8000
a=ptime:20
a=sendrecv
a=rtcp:24577 IN IP4 198.51.100.20
";

    // SIPp's built-in uac scenario body, with LF-only line ends.
    const SIPP_OFFER: &str = "v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
";

    #[test]
    fn parses_asterisk_offer() {
        let sdp = parse(&crlf(ASTERISK_OFFER));
        assert_eq!(sdp.origin.username, "-");
        assert_eq!(sdp.origin.session_id, "1673439162");
        assert_eq!(sdp.origin.session_version, 1673439162);
        assert_eq!(sdp.origin.address, "203.0.113.10");
        assert_eq!(sdp.session_name, "Asterisk");
        assert_eq!(
            sdp.connection.as_ref().and_then(Connection::ip),
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)))
        );
        let m = &sdp.media[0];
        assert_eq!(m.kind, MediaKind::Audio);
        assert_eq!(m.port, 18732);
        assert_eq!(m.proto, "RTP/AVP");
        assert_eq!(m.payload_types(), vec![8, 0, 3, 101]);
        assert_eq!(
            m.rtpmap(101).map(|r| r.encoding.as_str()),
            Some("telephone-event")
        );
        assert_eq!(m.fmtp(101), Some("0-16"));
        assert_eq!(m.ptime, Some(20));
        assert_eq!(m.maxptime, Some(150));
        assert_eq!(m.direction, Some(Direction::SendRecv));
        assert_eq!(m.telephone_event(), Some(101));
    }

    #[test]
    fn answers_asterisk_offer_with_our_preference() {
        let offer = parse(&crlf(ASTERISK_OFFER));
        let n = answer(&offer, &local(), &CodecPrefs::default()).expect("answer");
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.payload_type, 0);
        assert_eq!(n.dtmf_pt, Some(101));
        assert_eq!(n.ptime, 20);
        assert_eq!(n.direction, Direction::SendRecv);
        assert!(!n.remote_hold);
        assert_eq!(
            n.remote_rtp,
            Some("203.0.113.10:18732".parse().expect("addr"))
        );
        let text = n.answer.to_string();
        assert_eq!(
            text,
            "v=0\r\no=screenpop 4242 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
             m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        // PCMA first in our list: follow ours, not the offerer's order.
        let n = answer(&offer, &local(), &[Codec::Pcma, Codec::Pcmu]).expect("answer");
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
    }

    #[test]
    fn answers_freeswitch_offer() {
        let offer = parse(&crlf(FREESWITCH_OFFER));
        let m = &offer.media[0];
        assert_eq!(
            m.rtcp,
            Some(RtcpAttr {
                port: 24577,
                connection: Some(Connection {
                    net_type: "IN".into(),
                    addr_type: "IP4".into(),
                    address: "198.51.100.20".into()
                })
            })
        );
        assert_eq!(m.rtpmap(102).and_then(|r| r.channels), Some(2));
        let n = answer(&offer, &local(), &[Codec::Pcma]).expect("answer");
        assert_eq!(
            (n.codec, n.payload_type, n.dtmf_pt),
            (Codec::Pcma, 8, Some(101))
        );
        let am = &n.answer.media[0];
        assert_eq!(am.formats, vec!["8", "101"]);
        assert!(am.rtpmap(13).is_none(), "CN not echoed");
    }

    #[test]
    fn answers_sipp_offer_lf_only() {
        let offer = parse(SIPP_OFFER);
        let n = answer(&offer, &local(), &CodecPrefs::default()).expect("answer");
        assert_eq!((n.codec, n.payload_type, n.dtmf_pt), (Codec::Pcmu, 0, None));
        assert_eq!(n.remote_rtp, Some("127.0.0.1:6000".parse().expect("addr")));
        assert!(!n.answer.to_string().contains("telephone-event"));
        // And it serialises with CRLF only.
        let text = offer.to_string();
        assert!(!text.replace("\r\n", "").contains('\n'));
        assert_eq!(parse(&text), offer);
    }

    #[test]
    fn static_payload_types_without_rtpmap() {
        let offer = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5000 RTP/AVP 18 8\n");
        let n = answer(&offer, &local(), &CodecPrefs::default()).expect("answer");
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
    }

    #[test]
    fn dynamic_payload_numbers_are_honoured() {
        // telephone-event on 96, PCMU remapped to a dynamic number.
        let offer = parse(&crlf(
            "v=0
o=- 5 5 IN IP4 10.0.0.2
s=-
c=IN IP4 10.0.0.2
t=0 0
m=audio 7078 RTP/AVP 110 96
a=rtpmap:110 pcmu/8000
a=rtpmap:96 telephone-event/8000
a=fmtp:96 0-15
",
        ));
        let n = answer(&offer, &local(), &CodecPrefs::default()).expect("answer");
        assert_eq!(
            (n.codec, n.payload_type, n.dtmf_pt),
            (Codec::Pcmu, 110, Some(96))
        );
        let am = &n.answer.media[0];
        assert_eq!(am.formats, vec!["110", "96"]);
        assert_eq!(am.fmtp(96), Some("0-15"));
        assert_eq!(am.rtpmap(110).map(|r| r.encoding.as_str()), Some("PCMU"));
    }

    #[test]
    fn telephone_event_at_16k_is_not_dtmf_for_g711() {
        let offer = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5000 RTP/AVP 0 100 101\na=rtpmap:100 telephone-event/16000\na=rtpmap:101 telephone-event/8000\n");
        let n = answer(&offer, &local(), &CodecPrefs::default()).expect("answer");
        assert_eq!(n.dtmf_pt, Some(101));
        assert_eq!(n.answer.media[0].fmtp(101), None);
    }

    #[test]
    fn no_common_codec() {
        let offer = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5000 RTP/AVP 18 9 101\na=rtpmap:101 telephone-event/8000\n");
        assert_eq!(
            answer(&offer, &local(), &CodecPrefs::default()),
            Err(NegotiationError::NoCommonCodec)
        );
        // PCMU at the wrong clock rate is a different codec.
        let offer = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5000 RTP/AVP 97\na=rtpmap:97 PCMU/16000\n");
        assert_eq!(
            answer(&offer, &local(), &CodecPrefs::default()),
            Err(NegotiationError::NoCommonCodec)
        );
    }

    #[test]
    fn multiple_media_lines_rejected_in_order() {
        let offer = parse(&crlf(
            "v=0
o=Zoiper 0 1 IN IP4 10.1.1.5
s=Z
c=IN IP4 10.1.1.5
t=0 0
m=video 9078 RTP/AVP 99 34
a=rtpmap:99 H264/90000
m=audio 8000 RTP/SAVP 0
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
m=audio 8002 RTP/AVP 0 8 101
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
m=image 0 udptl t38
",
        ));
        let n = answer(&offer, &local(), &CodecPrefs::default()).expect("answer");
        let kinds: Vec<(String, u16, String)> = n
            .answer
            .media
            .iter()
            .map(|m| (m.kind.to_string(), m.port, m.proto.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("video".to_owned(), 0, "RTP/AVP".to_owned()),
                ("audio".to_owned(), 0, "RTP/SAVP".to_owned()),
                ("audio".to_owned(), 40000, "RTP/AVP".to_owned()),
                ("image".to_owned(), 0, "udptl".to_owned()),
            ]
        );
        assert_eq!(n.remote_rtp, Some("10.1.1.5:8002".parse().expect("addr")));
        assert_eq!(n.answer.media[0].formats, vec!["99", "34"]);
        // The answer itself re-parses.
        assert_eq!(parse(&n.answer.to_string()), n.answer);
    }

    #[test]
    fn srtp_only_is_unsupported_and_no_audio_is_reported() {
        let savp = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5000 RTP/SAVP 0\n");
        assert_eq!(
            answer(&savp, &local(), &CodecPrefs::default()),
            Err(NegotiationError::UnsupportedTransport {
                proto: "RTP/SAVP".to_owned()
            })
        );
        let video = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=video 5000 RTP/AVP 96\nm=audio 0 RTP/AVP 0\n");
        assert_eq!(
            answer(&video, &local(), &CodecPrefs::default()),
            Err(NegotiationError::NoAudioStream)
        );
        let no_c = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 0\n");
        assert_eq!(
            answer(&no_c, &local(), &CodecPrefs::default()),
            Err(NegotiationError::MissingConnection { index: 0 })
        );
        let fqdn = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 media.example.com\nt=0 0\nm=audio 5000 RTP/AVP 0\n");
        assert_eq!(
            answer(&fqdn, &local(), &CodecPrefs::default()),
            Err(NegotiationError::ConnectionNotIp {
                address: "media.example.com".to_owned()
            })
        );
    }

    const KEY_A: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    const KEY_B: &str = "PS1uQCVeeCFCanVmcHlmYlRxTHF5d2l3dk14fHx8";

    fn srtp_local() -> LocalMedia {
        LocalMedia {
            srtp: Some(LocalSrtp::new(MasterKey::new([7; 16], [9; 14]))),
            ..local()
        }
    }

    /// A trunk offering SRTP (RFC 4568 §9.1): the first line we can use is taken, its tag and
    /// suite echoed with our key, and the keys are settled both ways.
    #[test]
    fn an_srtp_offer_is_answered_with_our_key_for_the_first_usable_line() {
        let offer = parse(&format!(
            "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n\
             m=audio 5000 RTP/SAVP 0\n\
             a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_A}{KEY_A}\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B}|2^31\n\
             a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{KEY_A}\n"
        ));
        assert!(offers_srtp(&offer));
        let n = answer(&offer, &srtp_local(), &CodecPrefs::default()).unwrap();
        let keys = n.srtp.expect("SRTP settled");
        assert_eq!(keys.suite, Suite::AesCm128HmacSha1_80);
        assert_eq!(keys.theirs, MasterKey::from_inline(KEY_B).unwrap());
        assert_eq!(keys.ours, MasterKey::new([7; 16], [9; 14]));
        let text = n.answer.to_string();
        assert!(text.contains("m=audio 40000 RTP/SAVP 0\r\n"), "{text}");
        let ours = keys.ours.inline();
        assert!(
            text.contains(&format!(
                "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{ours}\r\n"
            )),
            "{text}"
        );
        // Without a key of ours (a plain leg) the same offer is refused: 488.
        assert_eq!(
            answer(&offer, &local(), &CodecPrefs::default()),
            Err(NegotiationError::UnsupportedTransport {
                proto: "RTP/SAVP".to_owned()
            })
        );
        // SAVP whose only line has an MKI or an unknown suite is not SRTP we can answer.
        let mki = parse(&format!(
            "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n\
             m=audio 5000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^20|1:4\n"
        ));
        assert!(!offers_srtp(&mki));
        assert_eq!(
            answer(&mki, &srtp_local(), &CodecPrefs::default()),
            Err(NegotiationError::NoUsableCrypto)
        );
    }

    /// Our SRTP offer carries one line with our key; the answer must take it (same tag and
    /// suite, RTP/SAVP) and its key is the peer's.
    #[test]
    fn our_srtp_offer_and_the_answer_to_it() {
        let mine = srtp_local();
        let o = offer(&mine, &[Codec::Pcmu], Some(101), Direction::SendRecv);
        let text = o.to_string();
        assert!(text.contains("m=audio 40000 RTP/SAVP 0 101\r\n"), "{text}");
        let inline = MasterKey::new([7; 16], [9; 14]).inline();
        assert!(
            text.contains(&format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline}\r\n"
            )),
            "{text}"
        );
        let reply = |proto: &str, line: &str| {
            parse(&format!(
                "v=0\no=- 2 1 IN IP4 10.0.0.2\ns=-\nc=IN IP4 10.0.0.2\nt=0 0\n\
                 m=audio 6000 {proto} 0\na=rtpmap:0 PCMU/8000\n{line}"
            ))
        };
        let good = reply(
            "RTP/SAVP",
            &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B}\n"),
        );
        let acc = accept_answer(&o, &good).unwrap();
        assert_eq!(
            acc.srtp,
            Some(SrtpKeys {
                suite: Suite::AesCm128HmacSha1_80,
                ours: MasterKey::new([7; 16], [9; 14]),
                theirs: MasterKey::from_inline(KEY_B).unwrap(),
            })
        );
        for bad in [
            reply("RTP/AVP", ""),
            reply(
                "RTP/SAVP",
                &format!("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B}\n"),
            ),
            reply(
                "RTP/SAVP",
                &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B}\n"),
            ),
        ] {
            assert!(accept_answer(&o, &bad).is_err(), "{bad}");
        }
        // A plain offer stays plain, and its answer settles no keys.
        let o = offer(&local(), &[Codec::Pcmu], None, Direction::SendRecv);
        assert!(o.to_string().contains("RTP/AVP"));
        assert_eq!(accept_answer(&o, &reply("RTP/AVP", "")).unwrap().srtp, None);
    }

    fn offer_with(dir_lines: &str, conn: &str) -> SessionDescription {
        parse(&format!(
            "v=0\no=- 7 1 IN IP4 10.0.0.9\ns=-\nc=IN IP4 {conn}\nt=0 0\nm=audio 5004 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n{dir_lines}"
        ))
    }

    #[test]
    fn remote_hold_and_resume() {
        let l = local();
        let cases = [
            ("a=sendonly\n", "10.0.0.9", Direction::RecvOnly, true),
            ("a=inactive\n", "10.0.0.9", Direction::Inactive, true),
            ("a=recvonly\n", "10.0.0.9", Direction::SendOnly, false),
            ("a=sendrecv\n", "10.0.0.9", Direction::SendRecv, false),
            ("", "10.0.0.9", Direction::SendRecv, false),
            // RFC 2543 hold: offerer will not receive.
            ("", "0.0.0.0", Direction::RecvOnly, true),
            ("a=recvonly\n", "0.0.0.0", Direction::Inactive, true),
        ];
        for (dir, conn, expected, hold) in cases {
            let n = answer(&offer_with(dir, conn), &l, &CodecPrefs::default()).expect("answer");
            assert_eq!(n.direction, expected, "{dir:?} {conn}");
            assert_eq!(n.answer.media[0].direction, Some(expected));
            assert_eq!(n.remote_hold, hold, "{dir:?} {conn}");
            if conn == "0.0.0.0" {
                assert_eq!(n.remote_rtp, None);
            } else {
                assert_eq!(n.remote_rtp, Some("10.0.0.9:5004".parse().expect("addr")));
            }
        }
    }

    #[test]
    fn local_direction_restricts_answer() {
        let o = offer_with("a=sendrecv\n", "10.0.0.9");
        let n = answer_with_direction(&o, &local(), &CodecPrefs::default(), Direction::SendOnly)
            .expect("answer");
        assert_eq!(n.direction, Direction::SendOnly);
        let o = offer_with("a=sendonly\n", "10.0.0.9");
        let n = answer_with_direction(&o, &local(), &CodecPrefs::default(), Direction::SendOnly)
            .expect("answer");
        assert_eq!(n.direction, Direction::Inactive);
    }

    #[test]
    fn session_vs_media_level_direction_and_connection() {
        let sdp = parse(&crlf(
            "v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
a=sendonly
m=audio 5000 RTP/AVP 0
c=IN IP4 10.0.0.77
a=sendrecv
m=audio 6000 RTP/AVP 0
",
        ));
        assert_eq!(sdp.direction, Some(Direction::SendOnly));
        assert_eq!(sdp.media_direction(0), Direction::SendRecv);
        assert_eq!(sdp.media_direction(1), Direction::SendOnly);
        assert_eq!(
            sdp.media_connection(0).map(|c| c.address.as_str()),
            Some("10.0.0.77")
        );
        assert_eq!(
            sdp.media_connection(1).map(|c| c.address.as_str()),
            Some("10.0.0.1")
        );
        let n = answer(&sdp, &local(), &CodecPrefs::default()).expect("answer");
        assert_eq!(n.remote_rtp, Some("10.0.0.77:5000".parse().expect("addr")));
        assert_eq!(n.direction, Direction::SendRecv);
        assert_eq!(n.answer.media[1].port, 0);

        // Session-level sendonly applies where the media says nothing.
        let sdp = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\na=sendonly\nm=audio 5000 RTP/AVP 8\nc=IN IP4 10.0.0.5\n");
        let n = answer(&sdp, &local(), &CodecPrefs::default()).expect("answer");
        assert_eq!(n.direction, Direction::RecvOnly);
        assert!(n.remote_hold);
        assert_eq!(n.remote_rtp, Some("10.0.0.5:5000".parse().expect("addr")));
    }

    #[test]
    fn ipv6_connection() {
        let offer = parse(&crlf(
            "v=0
o=- 99 2 IN IP6 2001:db8::20
s=-
c=IN IP6 2001:db8::20
t=0 0
m=audio 30000 RTP/AVP 8
",
        ));
        let mut l = local();
        l.addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
        let n = answer(&offer, &l, &CodecPrefs::default()).expect("answer");
        assert_eq!(
            n.remote_rtp,
            Some("[2001:db8::20]:30000".parse().expect("addr"))
        );
        let text = n.answer.to_string();
        assert!(text.contains("c=IN IP6 2001:db8::10\r\n"), "{text}");
        assert!(
            text.contains("o=screenpop 4242 1 IN IP6 2001:db8::10\r\n"),
            "{text}"
        );
        // "::" is treated like 0.0.0.0.
        let held =
            parse("v=0\no=- 1 1 IN IP6 ::1\ns=-\nc=IN IP6 ::\nt=0 0\nm=audio 30000 RTP/AVP 0\n");
        let n = answer(&held, &l, &CodecPrefs::default()).expect("answer");
        assert!(n.remote_hold);
        assert_eq!(n.remote_rtp, None);
    }

    #[test]
    fn ptime_echo_and_maxptime_cap() {
        let mk = |attrs: &str| {
            parse(&format!(
                "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5000 RTP/AVP 0\n{attrs}"
            ))
        };
        let p = |attrs: &str| answer(&mk(attrs), &local(), &CodecPrefs::default()).map(|n| n.ptime);
        assert_eq!(p(""), Ok(20));
        assert_eq!(p("a=ptime:30\n"), Ok(30));
        assert_eq!(p("a=ptime:30\na=maxptime:20\n"), Ok(20));
        assert_eq!(p("a=maxptime:10\n"), Ok(10));
        assert_eq!(p("a=ptime:20.0\n"), Ok(20));
        let n = answer(&mk("a=ptime:30\n"), &local(), &CodecPrefs::default()).expect("answer");
        assert_eq!(n.answer.media[0].ptime, Some(30));
    }

    #[test]
    fn our_offer_hold_and_resume() {
        let mut l = local();
        let o = offer(&l, &CodecPrefs::default(), Some(101), Direction::SendRecv);
        assert_eq!(
            o.to_string(),
            "v=0\r\no=screenpop 4242 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
             m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        );

        // The agent phone answers our offer (answer built by our own answerer).
        let mut phone = local();
        phone.addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50));
        phone.port = 7078;
        let reply = answer(&o, &phone, &[Codec::Pcma, Codec::Pcmu]).expect("phone answers");
        let acc = accept_answer(&o, &reply.answer).expect("accept");
        assert_eq!(
            (acc.codec, acc.payload_type, acc.dtmf_pt),
            (Codec::Pcma, 8, Some(101))
        );
        assert_eq!(
            acc.remote_rtp,
            Some("192.0.2.50:7078".parse().expect("addr"))
        );
        assert_eq!(acc.direction, Direction::SendRecv);

        // Hold: re-INVITE sendonly with a bumped version.
        assert_eq!(l.bump_version(), 2);
        let hold = offer(&l, &CodecPrefs::default(), Some(101), Direction::SendOnly);
        assert_eq!(hold.origin.session_version, 2);
        assert_eq!(hold.origin.session_id, o.origin.session_id);
        let reply = answer(&hold, &phone, &CodecPrefs::default()).expect("phone answers");
        assert_eq!(reply.answer.media[0].direction, Some(Direction::RecvOnly));
        let acc = accept_answer(&hold, &reply.answer).expect("accept");
        assert_eq!(acc.direction, Direction::SendOnly);
        assert!(!acc.remote_hold);

        // A phone that wrongly answers sendrecv to our sendonly: we still
        // only send.
        let mut bad = reply.answer.clone();
        bad.media[0].direction = Some(Direction::SendRecv);
        assert_eq!(
            accept_answer(&hold, &bad).map(|a| a.direction),
            Ok(Direction::SendOnly)
        );

        // Resume.
        assert_eq!(next_version(l.session_version), 3);
        l.bump_version();
        let resume = offer(&l, &CodecPrefs::default(), Some(101), Direction::SendRecv);
        let reply = answer(&resume, &phone, &CodecPrefs::default()).expect("phone answers");
        let acc = accept_answer(&resume, &reply.answer).expect("accept");
        assert_eq!(acc.direction, Direction::SendRecv);
    }

    #[test]
    fn answer_with_foreign_codec_or_wrong_shape_is_an_error() {
        let l = local();
        let o = offer(&l, &[Codec::Pcmu], Some(101), Direction::SendRecv);
        let g729 = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5000 RTP/AVP 18 101\na=rtpmap:18 G729/8000\na=rtpmap:101 telephone-event/8000\n");
        assert_eq!(
            accept_answer(&o, &g729),
            Err(NegotiationError::CodecNotOffered {
                payload_type: 18,
                encoding: "G729/8000".to_owned()
            })
        );
        let pcma = parse(
            "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5000 RTP/AVP 8\n",
        );
        assert!(matches!(
            accept_answer(&o, &pcma),
            Err(NegotiationError::CodecNotOffered {
                payload_type: 8,
                ..
            })
        ));
        let rejected = parse(
            "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 0 RTP/AVP 0\n",
        );
        assert_eq!(
            accept_answer(&o, &rejected),
            Err(NegotiationError::AudioRejected)
        );
        let two = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5000 RTP/AVP 0\nm=video 0 RTP/AVP 96\n");
        assert_eq!(
            accept_answer(&o, &two),
            Err(NegotiationError::MediaCountMismatch {
                offered: 1,
                answered: 2
            })
        );
        let only_dtmf = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5000 RTP/AVP 101\na=rtpmap:101 telephone-event/8000\n");
        assert_eq!(
            accept_answer(&o, &only_dtmf),
            Err(NegotiationError::NoCommonCodec)
        );
        // DTMF in the answer but not offered: ignored.
        let o2 = offer(&l, &[Codec::Pcmu], None, Direction::SendRecv);
        let with_dtmf = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio 5000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\na=ptime:30\n");
        let acc = accept_answer(&o2, &with_dtmf).expect("accept");
        assert_eq!(acc.dtmf_pt, None);
        assert_eq!(acc.ptime, 30);
        assert_eq!(acc.remote_rtp, None);
        assert!(acc.remote_hold);
        assert_eq!(acc.direction, Direction::RecvOnly);
    }

    #[test]
    fn offer_sanitises_inputs() {
        let mut l = local();
        l.username = String::new();
        let o = offer(&l, &[], Some(8), Direction::SendRecv);
        assert_eq!(o.origin.username, "-");
        assert_eq!(
            o.media[0].formats,
            vec!["0", "8"],
            "default prefs, bad dtmf pt dropped"
        );
        let o = offer(
            &l,
            &[Codec::Pcma, Codec::Pcma],
            Some(96),
            Direction::Inactive,
        );
        assert_eq!(o.media[0].formats, vec!["8", "96"]);
        assert_eq!(o.media[0].direction, Some(Direction::Inactive));
    }

    #[test]
    fn unknown_lines_are_kept() {
        let sdp = parse(&crlf(
            "v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
i=call center
c=IN IP4 10.0.0.1
b=AS:84
t=0 0
x=experimental
a=group:BUNDLE 0
m=audio 5000 RTP/AVP 0
b=TIAS:64000
a=mid:0
a=rtcp-mux
a=X-nat:0
",
        ));
        assert_eq!(sdp.attributes[0].name, "group");
        assert_eq!(sdp.media[0].attributes.len(), 3);
        let text = sdp.to_string();
        assert!(text.contains("i=call center\r\nc=IN IP4 10.0.0.1\r\nb=AS:84\r\nt=0 0\r\nx=experimental\r\na=group:BUNDLE 0\r\n"), "{text}");
        assert!(
            text.contains(
                "m=audio 5000 RTP/AVP 0\r\nb=TIAS:64000\r\na=mid:0\r\na=rtcp-mux\r\na=X-nat:0\r\n"
            ),
            "{text}"
        );
        assert_eq!(parse(&text), sdp);
    }

    #[test]
    fn missing_timing_is_written_out() {
        let sdp = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=x\nr=7d 1h\nm=audio 5000 RTP/AVP 0\n");
        assert!(sdp.to_string().contains("s=x\r\nt=0 0\r\nr=7d 1h\r\n"));
    }

    #[test]
    fn typed_errors_for_garbage() {
        let err = |s: &[u8]| SessionDescription::parse(s).err();
        assert_eq!(err(b""), Some(SdpError::Empty));
        assert_eq!(err(b"\r\n \n"), Some(SdpError::Empty));
        assert!(matches!(
            err(b"hello"),
            Some(SdpError::MissingVersion { .. })
        ));
        assert!(matches!(
            err(b"\x00\xff\xfe"),
            Some(SdpError::MissingVersion { .. })
        ));
        assert!(matches!(
            err(b"v=1\n"),
            Some(SdpError::UnsupportedVersion { .. })
        ));
        assert_eq!(err(b"v=0\ns=-\n"), Some(SdpError::MissingOrigin));
        assert_eq!(
            err(b"v=0\no=- 1 1 IN IP4 1.2.3.4\n"),
            Some(SdpError::MissingSessionName)
        );
        assert!(matches!(
            err(b"v=0\no=- 1 IN IP4 1.2.3.4\n"),
            Some(SdpError::BadOrigin { line: 2, .. })
        ));
        assert!(matches!(
            err(b"v=0\no=- 1 x IN IP4 1.2.3.4\n"),
            Some(SdpError::BadSessionVersion { line: 2, .. })
        ));
        let head = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n";
        let e = |rest: &str| SessionDescription::parse(format!("{head}{rest}").as_bytes()).err();
        assert!(matches!(
            e("garbage\r\n"),
            Some(SdpError::MalformedLine { line: 4, .. })
        ));
        assert!(matches!(e("==\r\n"), Some(SdpError::MalformedLine { .. })));
        assert!(matches!(
            e("c=IN IP4\r\n"),
            Some(SdpError::BadConnection { .. })
        ));
        assert!(matches!(
            e("m=audio\r\n"),
            Some(SdpError::BadMediaLine { .. })
        ));
        assert!(matches!(
            e("m=audio abc RTP/AVP 0\r\n"),
            Some(SdpError::BadPort { .. })
        ));
        assert!(matches!(
            e("m=audio 70000 RTP/AVP 0\r\n"),
            Some(SdpError::BadPort { .. })
        ));
        assert!(matches!(
            e("m=audio 5000/x RTP/AVP 0\r\n"),
            Some(SdpError::BadPort { .. })
        ));
        assert!(matches!(
            e("m=audio 5000 RTP/AVP 0 200\r\n"),
            Some(SdpError::BadPayloadType { .. })
        ));
        assert!(matches!(
            e("m=audio 5000 RTP/AVP\r\n"),
            Some(SdpError::NoFormats { .. })
        ));
        let m = "m=audio 5000 RTP/AVP 0\r\n";
        for bad in [
            "a=rtpmap:0 PCMU",
            "a=rtpmap:x PCMU/8000",
            "a=rtpmap:0 PCMU/8000/1/2",
        ] {
            assert_eq!(e(&format!("{m}{bad}\r\n")), None, "{bad} is tolerated");
            let sd = SessionDescription::parse(format!("{head}{m}{bad}\r\n").as_bytes()).unwrap();
            assert!(
                sd.media[0].rtpmaps.is_empty(),
                "{bad} is not a usable rtpmap"
            );
            assert_eq!(
                sd.media[0].attributes.len(),
                1,
                "{bad} is kept as an attribute"
            );
        }
        assert!(matches!(
            e(&format!("{m}a=fmtp:abc 0-16\r\n")),
            Some(SdpError::BadFmtp { .. })
        ));
        assert!(matches!(
            e(&format!("{m}a=ptime:twenty\r\n")),
            Some(SdpError::BadPacketTime { name: "ptime", .. })
        ));
        assert!(matches!(
            e(&format!("{m}a=maxptime:1e9\r\n")),
            Some(SdpError::BadPacketTime {
                name: "maxptime",
                ..
            })
        ));
        assert!(matches!(
            e(&format!("{m}a=rtcp:x\r\n")),
            Some(SdpError::BadRtcp { .. })
        ));
        assert!(matches!(
            e(&format!("{m}a=rtcp:5001 IN\r\n")),
            Some(SdpError::BadRtcp { .. })
        ));
        assert!(matches!(
            e(&format!("{m}s=late\r\n")),
            Some(SdpError::MisplacedLine { kind: 's', .. })
        ));
        assert!(matches!(
            e("s=again\r\n"),
            Some(SdpError::DuplicateLine { kind: 's', .. })
        ));
        // Long garbage is quoted only in part.
        let long = "x".repeat(10_000);
        let msg = e(&format!("c={long}\r\n"))
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.len() < 300, "{msg}");
    }

    #[test]
    fn non_rtp_formats_are_not_payload_types() {
        let sdp = parse("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=image 5000 udptl t38\na=T38FaxVersion:0\nm=application 9 TCP/BFCP *\n");
        assert!(sdp.media[0].payload_types().is_empty());
        assert_eq!(sdp.media[1].formats, vec!["*"]);
        assert_eq!(
            answer(&sdp, &local(), &CodecPrefs::default()),
            Err(NegotiationError::NoAudioStream)
        );
    }

    #[test]
    fn direction_algebra() {
        use Direction::*;
        for d in [SendRecv, SendOnly, RecvOnly, Inactive] {
            assert_eq!(d.reversed().reversed(), d);
            assert_eq!(d.restrict(SendRecv), d);
            assert_eq!(d.restrict(Inactive), Inactive);
            assert_eq!(Direction::from_attribute(d.as_str()), Some(d));
        }
        assert_eq!(SendOnly.reversed(), RecvOnly);
        assert_eq!(SendOnly.restrict(RecvOnly), Inactive);
        assert_eq!(Codec::from_name("pcma"), Some(Codec::Pcma));
        assert_eq!(Codec::from_name("G729"), None);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// Mostly well-formed media attributes, some garbage.
        fn media_line() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "a=rtpmap:(0|8|18|96|101|110) (PCMU|PCMA|pcmu|G729|telephone-event|opus)/(8000|16000|48000)(/[12])?",
                2 => "a=fmtp:(96|101|110) 0-1[156]",
                2 => "a=(ptime|maxptime):(0|10|20|30|20\\.5|x)",
                2 => "a=(sendrecv|sendonly|recvonly|inactive)",
                2 => "c=IN IP[46] (0\\.0\\.0\\.0|10\\.0\\.0\\.[0-9]|::|2001:db8::[0-9]|host\\.example)",
                1 => "a=rtcp:[0-9]{1,5}( IN IP4 10\\.0\\.0\\.[0-9])?",
                1 => "(b=AS:64|a=rtcp-mux|i=x|a=x:y)",
                1 => "a=rtpmap:[0-9]{0,4} [A-Za-z-]{0,16}(/[0-9]{0,6}){0,3}",
                1 => "a=fmtp:[0-9]{0,4}( [0-9,-]{0,6})?",
                1 => "[a-z]=.{0,10}",
                1 => ".{0,12}",
            ]
        }

        fn media_section() -> impl Strategy<Value = Vec<String>> {
            (
                prop_oneof![
                    8 => "m=audio [1-9][0-9]{0,4} RTP/AVP( (0|8|9|18|96|101|110|13)){1,5}",
                    4 => "m=(audio|video|image) (0|[1-9][0-9]{0,4})(/[1-9])? (RTP/AVP|RTP/SAVP|udptl)( (0|8|9|18|96|101|110|13)){1,5}",
                    1 => "m=(audio|video|image) [0-9/]{0,7} (RTP/AVP|RTP/SAVP|udptl)( [0-9a-z*]{0,4}){0,4}",
                ],
                proptest::collection::vec(media_line(), 0..7),
            )
                .prop_map(|(m, mut attrs)| {
                    attrs.insert(0, m);
                    attrs
                })
        }

        fn sdp_text() -> impl Strategy<Value = String> {
            let header = prop_oneof![
                6 => "v=0\no=- [0-9]{1,3} [0-9]{1,3} IN IP4 10\\.0\\.0\\.1\ns=-\nc=IN IP[46] (0\\.0\\.0\\.0|10\\.0\\.0\\.1|::1)\n(t=0 0\n)?(a=(sendonly|recvonly|inactive|sendrecv|tool:x)\n)?",
                2 => "v=0\no=- [0-9]{1,3} [0-9]{1,3} IN IP4 10\\.0\\.0\\.1\ns=-\n(t=0 0\n)?",
                1 => proptest::collection::vec(media_line(), 0..4).prop_map(|l| l.join("\n")),
            ];
            (
                header,
                proptest::collection::vec(media_section(), 0..4),
                prop_oneof![Just("\r\n"), Just("\n"), Just("\r")],
            )
                .prop_map(|(header, sections, eol)| {
                    let mut text = header.replace('\n', eol);
                    for line in sections.into_iter().flatten() {
                        text.push_str(&line);
                        text.push_str(eol);
                    }
                    text
                })
        }

        fn check(sdp: &SessionDescription) {
            // Serialising is stable: parse(to_string()) serialises identically.
            let text = sdp.to_string();
            let again = SessionDescription::parse(text.as_bytes());
            assert_eq!(again.as_ref().map(ToString::to_string).ok(), Some(text));
            let l = local();
            if let Ok(n) = answer(sdp, &l, &CodecPrefs::default()) {
                assert_eq!(n.answer.media.len(), sdp.media.len());
                let _ = accept_answer(sdp, &n.answer);
            }
            let _ = accept_answer(&offer(&l, &[], Some(101), Direction::SendRecv), sdp);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Ok(sdp) = SessionDescription::parse(&bytes) {
                    check(&sdp);
                }
            }

            #[test]
            fn sdp_like_text_never_panics(text in sdp_text()) {
                if let Ok(sdp) = SessionDescription::parse(text.as_bytes()) {
                    check(&sdp);
                }
            }
        }
    }
}
