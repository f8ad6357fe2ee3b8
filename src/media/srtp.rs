//! SRTP with SDES keying (RFC 3711, RFC 4568), for phones and trunks that refuse plain RTP.
//!
//! The relay anchors media and records both directions, so it cannot pass SRTP through
//! end to end: it decrypts what each SRTP peer sends (one [`SrtpContext`] per direction),
//! records and forwards the plain RTP, and encrypts again toward an SRTP peer with a key it
//! offered itself. Keys travel in SDP `a=crypto` lines ([`Crypto`]), which is why only SDES
//! is supported: no DTLS handshake sits on the packet path.
//!
//! Only the mandatory AES counter-mode suites are implemented (`AES_CM_128_HMAC_SHA1_80`
//! and its 32-bit-tag sibling), with key derivation rate 0, no MKI and a 64-packet replay
//! window. Everything here is sans-IO: packets in, packets out, into a buffer the caller
//! reuses, so the per-packet cost is one AES-CTR pass and one HMAC with no allocation.

use std::fmt;
use std::str::FromStr;

use aes::Aes128;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ctr::cipher::{InnerIvInit, KeyInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

type Aes128Ctr = ctr::Ctr128BE<Aes128>;
type Aes128CtrCore = ctr::CtrCore<Aes128, ctr::flavors::Ctr128BE>;
type HmacSha1 = Hmac<Sha1>;

/// Master key length for AES-128 (RFC 4568 §6.2.1).
const MASTER_KEY_LEN: usize = 16;
/// Master salt length, 112 bits (RFC 3711 §8.2).
const MASTER_SALT_LEN: usize = 14;
/// HMAC-SHA1 session authentication key length (RFC 3711 §4.2.1, n_a = 160).
const AUTH_KEY_LEN: usize = 20;
/// RFC 3550 fixed RTP header.
const RTP_HEADER_LEN: usize = 12;
/// RTCP header word plus sender SSRC: the part of SRTCP that stays in the clear.
const RTCP_CLEAR_LEN: usize = 8;
/// The E flag and 31-bit SRTCP index that follow the encrypted RTCP.
const SRTCP_INDEX_LEN: usize = 4;
/// SRTCP tag length for both suites: RFC 3711 §7.5 advises against short SRTCP tags and
/// libsrtp, pjsip and RFC 5764 use 80 bits for SRTCP even with the 32-bit SRTP suite.
const SRTCP_TAG_LEN: usize = 10;
const SRTCP_E_FLAG: u32 = 0x8000_0000;
const SRTCP_INDEX_MAX: u32 = 0x7fff_ffff;
/// RFC 3711 §3.3.2 requires at least 64.
const REPLAY_WINDOW: u64 = 64;
/// SSRCs tracked per direction; a peer that changes SSRC keeps its old replay state until
/// it falls out of this table, so replaying an earlier stream's packets still fails.
const MAX_SSRCS: usize = 4;

/// RFC 3711 §4.3.1 key-derivation labels.
const LABEL_RTP_ENC: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_ENC: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

/// Why a packet or an `a=crypto` line was refused. Packet errors are unit variants so the
/// hot path never allocates; the relay normally counts and drops rather than logging each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Shorter than the RTP/RTCP header plus the SRTP trailer it must carry.
    #[error("packet too short for its RTP/RTCP header and SRTP trailer")]
    TooShort,
    /// Not version 2, so not RTP/RTCP at all.
    #[error("not an RTP/RTCP version 2 packet")]
    BadVersion,
    /// Forged, corrupted, or protected with a different key.
    #[error("SRTP authentication tag does not match")]
    AuthFailed,
    /// Already received, or older than the 64-packet replay window (RFC 3711 §3.3.2).
    #[error("packet index already seen or older than the replay window")]
    Replay,
    /// 2^48 SRTP or 2^31 SRTCP packets under one key: reusing an index would reuse keystream.
    #[error("packet index space exhausted; the stream must be rekeyed")]
    IndexExhausted,
    /// A crypto suite other than `AES_CM_128_HMAC_SHA1_80` / `_32`.
    #[error("unsupported SRTP crypto suite {0:?}")]
    UnsupportedSuite(String),
    /// The key carries an MKI: the peer would insert MKI bytes into every packet.
    #[error("SDES key with an MKI is not supported")]
    MkiUnsupported,
    /// A session parameter that changes the transform (e.g. `UNENCRYPTED_SRTP`, `KDR=`).
    #[error("unsupported SDES session parameter {0:?}")]
    UnsupportedSessionParam(String),
    /// The `inline:` key-params are malformed.
    #[error("invalid SDES key-params: {0}")]
    InvalidKeyParams(&'static str),
    /// The `a=crypto` value is not `<tag> <suite> <key-params> [<session-params>]`.
    #[error("invalid a=crypto attribute: {0}")]
    InvalidCrypto(&'static str),
}

/// The SRTP crypto suites we can negotiate (RFC 4568 §6.2). Both use the same keys and
/// ciphers; `_32` exists because some trunks offer only it to save bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// `AES_CM_128_HMAC_SHA1_80`: the mandatory-to-implement suite, 80-bit tag.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`: 32-bit SRTP tag (SRTCP keeps 80 bits).
    AesCm128HmacSha1_32,
}

impl Suite {
    /// The name as written in `a=crypto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// Bytes of SRTP authentication tag, so callers can size buffers and MTU budgets.
    pub fn tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Suite {
    type Err = SrtpError;

    /// ABNF literals are case-insensitive (RFC 5234 §2.3), so any case is accepted.
    fn from_str(s: &str) -> Result<Suite, SrtpError> {
        [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32]
            .into_iter()
            .find(|suite| suite.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| SrtpError::UnsupportedSuite(s.to_owned()))
    }
}

/// An SDES master key and salt: what one side announces in `inline:` and the other uses to
/// derive the session keys. Debug output is redacted so keys never reach the logs.
#[derive(Clone, Copy)]
pub struct MasterKey {
    key: [u8; MASTER_KEY_LEN],
    salt: [u8; MASTER_SALT_LEN],
}

impl MasterKey {
    /// Wraps known key material, e.g. test vectors or keys from another keying source.
    pub fn new(key: [u8; MASTER_KEY_LEN], salt: [u8; MASTER_SALT_LEN]) -> MasterKey {
        MasterKey { key, salt }
    }

    /// A fresh random key for an offer or answer; RFC 4568 §6.1 requires a new key per
    /// direction and per session, never one reused across calls.
    pub fn generate() -> MasterKey {
        MasterKey {
            key: rand::random(),
            salt: rand::random(),
        }
    }

    /// Parses SDES key-params: `[inline:]<base64 key||salt>[|<lifetime>][|<mki>:<len>]`.
    /// A lifetime is accepted and ignored (calls end long before 2^31 packets); an MKI is
    /// refused because the peer would then put MKI bytes in every packet.
    pub fn from_inline(key_params: &str) -> Result<MasterKey, SrtpError> {
        let value = match key_params.get(..7) {
            Some(method) if method.eq_ignore_ascii_case("inline:") => &key_params[7..],
            _ => key_params,
        };
        let mut parts = value.split('|');
        let key_salt = parts.next().unwrap_or_default();
        for part in parts.by_ref().take(2) {
            if part.contains(':') {
                return Err(SrtpError::MkiUnsupported);
            }
            let digits = part.strip_prefix("2^").unwrap_or(part);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SrtpError::InvalidKeyParams(
                    "lifetime is not a number or 2^n",
                ));
            }
        }
        if parts.next().is_some() {
            return Err(SrtpError::InvalidKeyParams("too many `|` fields"));
        }
        let raw = BASE64
            .decode(key_salt)
            .map_err(|_| SrtpError::InvalidKeyParams("key-salt is not base64"))?;
        if raw.len() != MASTER_KEY_LEN + MASTER_SALT_LEN {
            return Err(SrtpError::InvalidKeyParams("key-salt is not 30 bytes"));
        }
        let mut key = MasterKey::new([0; MASTER_KEY_LEN], [0; MASTER_SALT_LEN]);
        key.key.copy_from_slice(&raw[..MASTER_KEY_LEN]);
        key.salt.copy_from_slice(&raw[MASTER_KEY_LEN..]);
        Ok(key)
    }

    /// The base64 key||salt to put after `inline:` (no lifetime, no MKI).
    pub fn inline(&self) -> String {
        let mut raw = [0u8; MASTER_KEY_LEN + MASTER_SALT_LEN];
        raw[..MASTER_KEY_LEN].copy_from_slice(&self.key);
        raw[MASTER_KEY_LEN..].copy_from_slice(&self.salt);
        BASE64.encode(raw)
    }
}

impl PartialEq for MasterKey {
    /// Constant time, so comparing a peer's key (e.g. to spot a re-key) leaks nothing.
    fn eq(&self, other: &MasterKey) -> bool {
        (self.key[..].ct_eq(&other.key[..]) & self.salt[..].ct_eq(&other.salt[..])).into()
    }
}

impl Eq for MasterKey {}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").finish_non_exhaustive()
    }
}

/// One SDP `a=crypto` line (RFC 4568 §9.1): the offerer lists several by `tag`, the
/// answerer echoes the chosen tag with its own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    /// Correlates offer and answer lines (1 to 9 digits).
    pub tag: u32,
    /// The transform both directions use.
    pub suite: Suite,
    /// The key the line's author will encrypt with.
    pub key: MasterKey,
}

impl Crypto {
    /// A line with a fresh random key, for offers and answers we write.
    pub fn generate(tag: u32, suite: Suite) -> Crypto {
        Crypto {
            tag,
            suite,
            key: MasterKey::generate(),
        }
    }

    /// Parses the value after `a=crypto:`. Session parameters that would change the
    /// transform are refused so the caller can pick another line or reject the offer;
    /// only the window-size hint `WSH=` is harmless and ignored.
    pub fn parse(value: &str) -> Result<Crypto, SrtpError> {
        let mut fields = value.split_ascii_whitespace();
        let tag = fields
            .next()
            .ok_or(SrtpError::InvalidCrypto("missing tag"))?;
        if tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SrtpError::InvalidCrypto("tag is not 1 to 9 digits"));
        }
        let tag = tag
            .parse::<u32>()
            .map_err(|_| SrtpError::InvalidCrypto("tag is not 1 to 9 digits"))?;
        let suite = fields
            .next()
            .ok_or(SrtpError::InvalidCrypto("missing crypto suite"))?
            .parse::<Suite>()?;
        let key_params = fields
            .next()
            .ok_or(SrtpError::InvalidCrypto("missing key-params"))?;
        if key_params.contains(';') {
            // Several keys are only distinguishable by MKI.
            return Err(SrtpError::MkiUnsupported);
        }
        let key = MasterKey::from_inline(key_params)?;
        for param in fields {
            let is_wsh = param
                .get(..4)
                .is_some_and(|name| name.eq_ignore_ascii_case("WSH="));
            if !is_wsh {
                return Err(SrtpError::UnsupportedSessionParam(param.to_owned()));
            }
        }
        Ok(Crypto { tag, suite, key })
    }

    /// The value for `a=crypto:` (what [`Crypto::parse`] reads back), e.g. for an
    /// `sdp::Attribute` named `crypto`.
    pub fn to_attr(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} inline:{}",
            self.tag,
            self.suite,
            self.key.inline()
        )
    }
}

/// RFC 3711 §4.3.1 with kdr = 0: AES-CM keystream under the master key, with the label
/// XORed into byte 7 of the master salt (key_id = label || 48 zero bits).
fn derive_session_key(master: &MasterKey, label: u8, out: &mut [u8]) {
    let aes = <Aes128 as KeyInit>::new(&master.key.into());
    let mut iv = [0u8; 16];
    iv[..MASTER_SALT_LEN].copy_from_slice(&master.salt);
    iv[7] ^= label;
    out.fill(0);
    Aes128Ctr::from_core(Aes128CtrCore::inner_iv_init(aes, &iv.into())).apply_keystream(out);
}

/// The session keys of one direction of SRTP or SRTCP, kept ready for the packet path:
/// the AES key schedule is expanded once and the HMAC is keyed once, then cloned per packet.
struct SessionKeys {
    aes: Aes128,
    salt: [u8; MASTER_SALT_LEN],
    mac: HmacSha1,
}

impl SessionKeys {
    fn new(
        enc_key: [u8; MASTER_KEY_LEN],
        salt: [u8; MASTER_SALT_LEN],
        auth_key: &[u8],
    ) -> SessionKeys {
        SessionKeys {
            aes: <Aes128 as KeyInit>::new(&enc_key.into()),
            salt,
            mac: <HmacSha1 as Mac>::new_from_slice(auth_key)
                .expect("HMAC accepts keys of any length"),
        }
    }

    fn derive(master: &MasterKey, labels: [u8; 3]) -> SessionKeys {
        let mut enc_key = [0u8; MASTER_KEY_LEN];
        let mut auth_key = [0u8; AUTH_KEY_LEN];
        let mut salt = [0u8; MASTER_SALT_LEN];
        derive_session_key(master, labels[0], &mut enc_key);
        derive_session_key(master, labels[1], &mut auth_key);
        derive_session_key(master, labels[2], &mut salt);
        SessionKeys::new(enc_key, salt, &auth_key)
    }

    /// AES-CM (RFC 3711 §4.1.1): IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16).
    /// Encryption and decryption are the same XOR.
    fn crypt(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..MASTER_SALT_LEN].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, i) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= *i;
        }
        Aes128Ctr::from_core(Aes128CtrCore::inner_iv_init(self.aes.clone(), &iv.into()))
            .apply_keystream(data);
    }

    /// Full HMAC-SHA1 over the concatenated parts; callers truncate to the suite's tag.
    fn auth(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut mac = self.mac.clone();
        for &part in parts {
            mac.update(part);
        }
        let mut tag = [0u8; 20];
        tag.copy_from_slice(&mac.finalize().into_bytes());
        tag
    }
}

/// Per-SSRC SRTP state: the highest index seen is `roc * 2^16 + s_l` (RFC 3711 §3.3.1);
/// bit k of `window` set means index `highest - k` was accepted (receive side only).
#[derive(Debug, Clone, Copy)]
struct RtpState {
    roc: u32,
    s_l: u16,
    window: u64,
}

/// Per-SSRC SRTCP receive state: highest index accepted and the replay window below it.
#[derive(Debug, Clone, Copy)]
struct RtcpState {
    highest: u32,
    window: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot<S> {
    ssrc: u32,
    last_used: u64,
    state: S,
}

/// A fixed-size map from SSRC to state, evicting the least recently updated entry, so the
/// packet path never allocates however many SSRCs a peer cycles through.
#[derive(Debug)]
struct SsrcTable<S> {
    slots: [Option<Slot<S>>; MAX_SSRCS],
    clock: u64,
}

impl<S: Copy> SsrcTable<S> {
    fn new() -> SsrcTable<S> {
        SsrcTable {
            slots: [None; MAX_SSRCS],
            clock: 0,
        }
    }

    fn get(&self, ssrc: u32) -> Option<S> {
        self.slots
            .iter()
            .flatten()
            .find(|slot| slot.ssrc == ssrc)
            .map(|slot| slot.state)
    }

    fn put(&mut self, ssrc: u32, state: S) {
        self.clock += 1;
        let mut victim = 0;
        let mut oldest = u64::MAX;
        for (i, slot) in self.slots.iter().enumerate() {
            match slot {
                Some(slot) if slot.ssrc == ssrc => {
                    victim = i;
                    break;
                }
                Some(slot) => {
                    if slot.last_used < oldest {
                        oldest = slot.last_used;
                        victim = i;
                    }
                }
                None => {
                    if oldest > 0 {
                        oldest = 0;
                        victim = i;
                    }
                }
            }
        }
        self.slots[victim] = Some(Slot {
            ssrc,
            last_used: self.clock,
            state,
        });
    }
}

/// RFC 3711 Appendix A: the ROC guess `v` for `seq` given the highest `s_l` seen. It is
/// returned unreduced, so `-1` (before the stream's start) and `2^32` (past the last ROC)
/// stay distinguishable from real rollover counters.
fn guess_roc(roc: u32, s_l: u16, seq: u16) -> i64 {
    let (roc, s_l, seq) = (i64::from(roc), i64::from(s_l), i64::from(seq));
    if s_l < 0x8000 {
        if seq - s_l > 0x8000 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    }
}

fn packet_index(roc: i64, seq: u16) -> i64 {
    (roc << 16) | i64::from(seq)
}

/// RFC 3711 §3.3.2: `delta` is the candidate index minus the highest accepted one.
fn replay_check(window: u64, delta: i64) -> Result<(), SrtpError> {
    if delta > 0 {
        return Ok(());
    }
    let back = delta.unsigned_abs();
    if back >= REPLAY_WINDOW || window & (1 << back) != 0 {
        return Err(SrtpError::Replay);
    }
    Ok(())
}

/// The window after accepting the packet at `delta`; bit 0 is always the highest index.
fn window_after(window: u64, delta: i64) -> u64 {
    let distance = delta.unsigned_abs();
    if delta > 0 {
        let shifted = if distance >= REPLAY_WINDOW {
            0
        } else {
            window << distance
        };
        shifted | 1
    } else if distance < REPLAY_WINDOW {
        window | (1 << distance)
    } else {
        window
    }
}

/// The parts of an RTP header SRTP needs: where the payload starts, SEQ and SSRC.
struct RtpHeader {
    len: usize,
    seq: u16,
    ssrc: u32,
}

/// RFC 3550 §5.1/§5.3.1: fixed header, CSRC list and header extension stay in the clear.
fn parse_rtp(packet: &[u8]) -> Result<RtpHeader, SrtpError> {
    if packet.len() < RTP_HEADER_LEN {
        return Err(SrtpError::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    let mut len = RTP_HEADER_LEN + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let ext = packet.get(len..len + 4).ok_or(SrtpError::TooShort)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    if packet.len() < len {
        return Err(SrtpError::TooShort);
    }
    Ok(RtpHeader {
        len,
        seq: u16::from_be_bytes([packet[2], packet[3]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
    })
}

/// Checks the first RTCP header and returns the sender SSRC that keys the SRTCP IV.
fn parse_rtcp(packet: &[u8]) -> Result<u32, SrtpError> {
    if packet.len() < RTCP_CLEAR_LEN {
        return Err(SrtpError::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    Ok(u32::from_be_bytes([
        packet[4], packet[5], packet[6], packet[7],
    ]))
}

/// SRTP and SRTCP for one direction of one media stream under one master key.
///
/// The relay keeps one per SRTP peer for what it receives (keyed by the peer's `a=crypto`)
/// and one for what it sends (keyed by ours), because SDES uses a different key per
/// direction. Rollover counters and replay windows are tracked per SSRC for the last few
/// SSRCs seen, so a peer that switches SSRC (re-INVITE, transfer) keeps working.
pub struct SrtpContext {
    suite: Suite,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    rtp_tx: SsrcTable<RtpState>,
    rtp_rx: SsrcTable<RtpState>,
    rtcp_rx: SsrcTable<RtcpState>,
    rtcp_tx_index: u32,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("rtcp_tx_index", &self.rtcp_tx_index)
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derives the six session keys once, so no key schedule runs per packet.
    pub fn new(key: &MasterKey, suite: Suite) -> SrtpContext {
        SrtpContext {
            suite,
            rtp: SessionKeys::derive(key, [LABEL_RTP_ENC, LABEL_RTP_AUTH, LABEL_RTP_SALT]),
            rtcp: SessionKeys::derive(key, [LABEL_RTCP_ENC, LABEL_RTCP_AUTH, LABEL_RTCP_SALT]),
            rtp_tx: SsrcTable::new(),
            rtp_rx: SsrcTable::new(),
            rtcp_rx: SsrcTable::new(),
            rtcp_tx_index: 0,
        }
    }

    /// The negotiated suite, e.g. to budget `tag_len()` bytes per packet.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Encrypts an RTP packet into `out` (cleared first): header in the clear, payload
    /// encrypted, auth tag appended (RFC 3711 §3.3).
    ///
    /// The index is estimated from the sequence number exactly as the receiver will, so
    /// forwarded packets may arrive here slightly out of order. Sequence numbers on one
    /// SSRC must not jump by 2^15 or more, or the receiver will misjudge the rollover
    /// counter; start a new SSRC instead. A packet whose sequence number lies before the
    /// first one sent on its SSRC is refused with [`SrtpError::Replay`], since any receiver
    /// would drop it as too old.
    pub fn protect(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let hdr = parse_rtp(packet)?;
        let (roc, next) = match self.rtp_tx.get(hdr.ssrc) {
            None => (
                0,
                RtpState {
                    roc: 0,
                    s_l: hdr.seq,
                    window: 0,
                },
            ),
            Some(state) => {
                let v = guess_roc(state.roc, state.s_l, hdr.seq);
                if v < 0 {
                    return Err(SrtpError::Replay);
                }
                let roc = u32::try_from(v).map_err(|_| SrtpError::IndexExhausted)?;
                let ahead =
                    packet_index(v, hdr.seq) > packet_index(i64::from(state.roc), state.s_l);
                let next = if ahead {
                    RtpState {
                        roc,
                        s_l: hdr.seq,
                        window: 0,
                    }
                } else {
                    state
                };
                (roc, next)
            }
        };
        let index = (u64::from(roc) << 16) | u64::from(hdr.seq);
        let tag_len = self.suite.tag_len();

        out.clear();
        out.reserve(packet.len() + tag_len);
        out.extend_from_slice(packet);
        self.rtp.crypt(hdr.ssrc, index, &mut out[hdr.len..]);
        let tag = self.rtp.auth(&[out.as_slice(), &roc.to_be_bytes()]);
        out.extend_from_slice(&tag[..tag_len]);

        self.rtp_tx.put(hdr.ssrc, next);
        Ok(())
    }

    /// Verifies and decrypts an SRTP packet into `out` (cleared first), yielding plain RTP.
    ///
    /// Order per RFC 3711 §3.3: estimate the index, reject replays, check the tag in
    /// constant time, decrypt, and only then advance the rollover counter and window, so
    /// forged packets cannot disturb the stream state. The first packet of an unknown SSRC
    /// is taken to have ROC 0.
    pub fn unprotect(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let tag_len = self.suite.tag_len();
        let authed_len = packet
            .len()
            .checked_sub(tag_len)
            .ok_or(SrtpError::TooShort)?;
        let (authed, tag) = packet.split_at(authed_len);
        let hdr = parse_rtp(authed)?;

        let prior = self.rtp_rx.get(hdr.ssrc);
        let (roc, delta) = match prior {
            None => (0, 1),
            Some(state) => {
                let v = guess_roc(state.roc, state.s_l, hdr.seq);
                if v < 0 {
                    return Err(SrtpError::Replay);
                }
                let roc = u32::try_from(v).map_err(|_| SrtpError::IndexExhausted)?;
                let delta =
                    packet_index(v, hdr.seq) - packet_index(i64::from(state.roc), state.s_l);
                replay_check(state.window, delta)?;
                (roc, delta)
            }
        };

        let expected = self.rtp.auth(&[authed, &roc.to_be_bytes()]);
        if !bool::from(expected[..tag_len].ct_eq(tag)) {
            return Err(SrtpError::AuthFailed);
        }

        let index = (u64::from(roc) << 16) | u64::from(hdr.seq);
        out.clear();
        out.extend_from_slice(authed);
        self.rtp.crypt(hdr.ssrc, index, &mut out[hdr.len..]);

        let next = match prior {
            None => RtpState {
                roc,
                s_l: hdr.seq,
                window: 1,
            },
            Some(state) if delta > 0 => RtpState {
                roc,
                s_l: hdr.seq,
                window: window_after(state.window, delta),
            },
            Some(state) => RtpState {
                window: window_after(state.window, delta),
                ..state
            },
        };
        self.rtp_rx.put(hdr.ssrc, next);
        Ok(())
    }

    /// Encrypts a (compound) RTCP packet into `out` (cleared first): everything after the
    /// sender SSRC is encrypted, then `E=1 || SRTCP index` and the 80-bit tag are appended
    /// (RFC 3711 §3.4). The index starts at 0 and counts every packet this context sends.
    pub fn protect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let ssrc = parse_rtcp(packet)?;
        let index = self.rtcp_tx_index;
        if index > SRTCP_INDEX_MAX {
            return Err(SrtpError::IndexExhausted);
        }

        out.clear();
        out.reserve(packet.len() + SRTCP_INDEX_LEN + SRTCP_TAG_LEN);
        out.extend_from_slice(packet);
        self.rtcp
            .crypt(ssrc, u64::from(index), &mut out[RTCP_CLEAR_LEN..]);
        out.extend_from_slice(&(SRTCP_E_FLAG | index).to_be_bytes());
        let tag = self.rtcp.auth(&[out.as_slice()]);
        out.extend_from_slice(&tag[..SRTCP_TAG_LEN]);

        self.rtcp_tx_index = index + 1;
        Ok(())
    }

    /// Verifies and decrypts an SRTCP packet into `out` (cleared first), yielding plain
    /// RTCP. The SRTCP index is explicit, so only the replay window is tracked per SSRC.
    /// A packet with E=0 (sent unencrypted but authenticated) is passed through as is.
    pub fn unprotect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        if packet.len() < RTCP_CLEAR_LEN + SRTCP_INDEX_LEN + SRTCP_TAG_LEN {
            return Err(SrtpError::TooShort);
        }
        let ssrc = parse_rtcp(packet)?;
        let (authed, tag) = packet.split_at(packet.len() - SRTCP_TAG_LEN);
        let (rtcp, trailer) = authed.split_at(authed.len() - SRTCP_INDEX_LEN);
        let e_index = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let encrypted = e_index & SRTCP_E_FLAG != 0;
        let index = e_index & SRTCP_INDEX_MAX;

        let prior = self.rtcp_rx.get(ssrc);
        let delta = match prior {
            None => 1,
            Some(state) => {
                let delta = i64::from(index) - i64::from(state.highest);
                replay_check(state.window, delta)?;
                delta
            }
        };

        let expected = self.rtcp.auth(&[authed]);
        if !bool::from(expected[..SRTCP_TAG_LEN].ct_eq(tag)) {
            return Err(SrtpError::AuthFailed);
        }

        out.clear();
        out.extend_from_slice(rtcp);
        if encrypted {
            self.rtcp
                .crypt(ssrc, u64::from(index), &mut out[RTCP_CLEAR_LEN..]);
        }

        let next = match prior {
            None => RtcpState {
                highest: index,
                window: 1,
            },
            Some(state) if delta > 0 => RtcpState {
                highest: index,
                window: window_after(state.window, delta),
            },
            Some(state) => RtcpState {
                window: window_after(state.window, delta),
                ..state
            },
        };
        self.rtcp_rx.put(ssrc, next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        ::hex::decode(s).unwrap()
    }

    fn arr<const N: usize>(s: &str) -> [u8; N] {
        hex(s).try_into().unwrap()
    }

    /// The master key of RFC 3711 B.3, also used by libsrtp's reference packets.
    fn rfc_master() -> MasterKey {
        MasterKey::new(
            arr("E1F97A0D3E018BE0D64FA32C06DE4139"),
            arr("0EC675AD498AFEEBB6960B3AABE6"),
        )
    }

    /// A plain RTP packet with `payload_len` bytes of payload.
    fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
        p
    }

    fn pair(suite: Suite) -> (SrtpContext, SrtpContext) {
        let key = MasterKey::generate();
        (SrtpContext::new(&key, suite), SrtpContext::new(&key, suite))
    }

    fn protect(tx: &mut SrtpContext, packet: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        tx.protect(packet, &mut out).unwrap();
        out
    }

    fn unprotect(rx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut out = Vec::new();
        rx.unprotect(packet, &mut out).map(|()| out)
    }

    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let keys = SessionKeys::new(
            arr("2B7E151628AED2A6ABF7158809CF4F3C"),
            arr("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"),
            &[0; AUTH_KEY_LEN],
        );
        let mut ks = [0u8; 48];
        keys.crypt(0, 0, &mut ks);
        assert_eq!(
            ks.to_vec(),
            hex("E03EAD0935C95E80E166B16DD92B4EB4
                 D23513162B02D0F72A43A2FE4A5F97AB
                 41E95B3BB0A2E8DD477901E4FCA894C0")
        );

        // The last blocks of the B.2 table, from counter F0F1...FCFDFEFF onward.
        let mut tail = [0u8; 48];
        let iv: [u8; 16] = arr("F0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF");
        Aes128Ctr::from_core(Aes128CtrCore::inner_iv_init(keys.aes.clone(), &iv.into()))
            .apply_keystream(&mut tail);
        assert_eq!(
            tail.to_vec(),
            hex("EC8CDF7398607CB0F2D21675EA9EA1E4
                 362B7C3C6773516318A077D7FC5073AE
                 6A2CC3787889374FBEB4C81B17BA6C44")
        );
    }

    #[test]
    fn rfc3711_b3_key_derivation() {
        let master = rfc_master();
        let mut enc = [0u8; 16];
        let mut salt = [0u8; 14];
        let mut auth = [0u8; 20];
        derive_session_key(&master, LABEL_RTP_ENC, &mut enc);
        derive_session_key(&master, LABEL_RTP_SALT, &mut salt);
        derive_session_key(&master, LABEL_RTP_AUTH, &mut auth);
        assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    const LIBSRTP_RTP: &str = "800f1234decafbadcafebabe abababababababababababababababab";
    const LIBSRTP_SRTP_80: &str = "800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402
                                   b78d6acc99ea179b8dbb";
    const LIBSRTP_RTCP: &str = "81c8000bcafebabe abababababababababababababababab";
    const LIBSRTP_SRTCP: &str = "81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8
                                 80000001 993e08cd54d6c1230798";

    /// libsrtp test/srtp_driver.c `srtp_validate()`: RFC 3711 B.3 master key, SSRC
    /// 0xcafebabe, SEQ 0x1234, ROC 0.
    #[test]
    fn libsrtp_reference_packet_sha1_80() {
        let mut tx = SrtpContext::new(&rfc_master(), Suite::AesCm128HmacSha1_80);
        let mut rx = SrtpContext::new(&rfc_master(), Suite::AesCm128HmacSha1_80);
        let srtp = protect(&mut tx, &hex(LIBSRTP_RTP));
        assert_eq!(srtp, hex(LIBSRTP_SRTP_80));
        assert_eq!(unprotect(&mut rx, &srtp).unwrap(), hex(LIBSRTP_RTP));
    }

    /// The 32-bit tag is the first 4 bytes of the same HMAC.
    #[test]
    fn libsrtp_reference_packet_sha1_32() {
        let mut tx = SrtpContext::new(&rfc_master(), Suite::AesCm128HmacSha1_32);
        let mut rx = SrtpContext::new(&rfc_master(), Suite::AesCm128HmacSha1_32);
        let expected = hex(LIBSRTP_SRTP_80)[..32].to_vec();
        let srtp = protect(&mut tx, &hex(LIBSRTP_RTP));
        assert_eq!(srtp, expected);
        assert_eq!(unprotect(&mut rx, &srtp).unwrap(), hex(LIBSRTP_RTP));
    }

    /// libsrtp's SRTCP reference packet, which carries SRTCP index 1.
    #[test]
    fn libsrtp_reference_srtcp_packet() {
        let mut tx = SrtpContext::new(&rfc_master(), Suite::AesCm128HmacSha1_80);
        let mut rx = SrtpContext::new(&rfc_master(), Suite::AesCm128HmacSha1_80);
        let mut out = Vec::new();
        // Index 0 goes to a throwaway packet, so the reference packet gets index 1.
        tx.protect_rtcp(&hex(LIBSRTP_RTCP), &mut out).unwrap();
        assert_eq!(&out[24..28], &[0x80, 0, 0, 0]);
        tx.protect_rtcp(&hex(LIBSRTP_RTCP), &mut out).unwrap();
        assert_eq!(out, hex(LIBSRTP_SRTCP));

        let mut plain = Vec::new();
        rx.unprotect_rtcp(&out, &mut plain).unwrap();
        assert_eq!(plain, hex(LIBSRTP_RTCP));
        assert_eq!(rx.unprotect_rtcp(&out, &mut plain), Err(SrtpError::Replay));
    }

    #[test]
    fn srtcp_rejects_tampering_and_accepts_reordering() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
        let rtcp = hex(LIBSRTP_RTCP);
        let packets: Vec<Vec<u8>> = (0..5)
            .map(|_| {
                let mut out = Vec::new();
                tx.protect_rtcp(&rtcp, &mut out).unwrap();
                out
            })
            .collect();
        let mut plain = Vec::new();

        let mut bad = packets[0].clone();
        bad[10] ^= 1;
        assert_eq!(
            rx.unprotect_rtcp(&bad, &mut plain),
            Err(SrtpError::AuthFailed)
        );
        let mut bad = packets[0].clone();
        bad[24] &= 0x7f; // clear E: the tag covers the trailer too
        assert_eq!(
            rx.unprotect_rtcp(&bad, &mut plain),
            Err(SrtpError::AuthFailed)
        );

        for i in [0, 3, 1, 4, 2] {
            rx.unprotect_rtcp(&packets[i], &mut plain).unwrap();
            assert_eq!(plain, rtcp);
        }
        assert_eq!(
            rx.unprotect_rtcp(&packets[1], &mut plain),
            Err(SrtpError::Replay)
        );
        assert_eq!(
            rx.unprotect_rtcp(&packets[0][..20], &mut plain),
            Err(SrtpError::TooShort)
        );
    }

    #[test]
    fn round_trip_across_sequence_wrap() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
        let ssrc = 0x1234_5678;
        let start: u16 = 60_000;
        let mut srtp = Vec::new();
        let mut plain = Vec::new();
        for n in 0..70_000u32 {
            let seq = start.wrapping_add(n as u16);
            let packet = rtp(seq, ssrc, 160);
            tx.protect(&packet, &mut srtp).unwrap();
            assert_eq!(srtp.len(), packet.len() + 10);
            assert_eq!(srtp[..12], packet[..12]);
            assert_ne!(srtp[12..172], packet[12..]);
            rx.unprotect(&srtp, &mut plain).unwrap();
            assert_eq!(plain, packet);
        }
        // The last packet has index 60_000 + 69_999 = 65_536 + 64_463.
        let state = rx.rtp_rx.get(ssrc).unwrap();
        assert_eq!((state.roc, state.s_l), (1, 64_463));
        let state = tx.rtp_tx.get(ssrc).unwrap();
        assert_eq!((state.roc, state.s_l), (1, 64_463));
    }

    #[test]
    fn reordering_across_wrap() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
        let seqs = [65_533u16, 65_534, 65_535, 0, 1, 2];
        let plain: Vec<_> = seqs.iter().map(|&s| rtp(s, 7, 20)).collect();
        let srtp: Vec<_> = plain.iter().map(|p| protect(&mut tx, p)).collect();
        for i in [0, 1, 3, 2, 5, 4] {
            assert_eq!(unprotect(&mut rx, &srtp[i]).unwrap(), plain[i]);
        }
        assert_eq!(rx.rtp_rx.get(7).unwrap().roc, 1);
        assert_eq!(unprotect(&mut rx, &srtp[2]), Err(SrtpError::Replay));
    }

    #[test]
    fn tampered_packets_are_rejected_without_disturbing_state() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
        let packet = rtp(1000, 42, 160);
        let srtp = protect(&mut tx, &packet);

        for byte in [1, 3, 11, 12, 100, srtp.len() - 1] {
            let mut bad = srtp.clone();
            bad[byte] ^= 0x01;
            assert_eq!(
                unprotect(&mut rx, &bad),
                Err(SrtpError::AuthFailed),
                "{byte}"
            );
        }
        // A forged far-ahead sequence number must not move the window.
        let mut bad = srtp.clone();
        bad[2] ^= 0x40;
        assert_eq!(unprotect(&mut rx, &bad), Err(SrtpError::AuthFailed));

        assert_eq!(unprotect(&mut rx, &srtp).unwrap(), packet);
        let mut other_key = SrtpContext::new(&MasterKey::generate(), Suite::AesCm128HmacSha1_80);
        assert_eq!(unprotect(&mut other_key, &srtp), Err(SrtpError::AuthFailed));
    }

    #[test]
    fn replayed_packet_is_rejected() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
        let srtp = protect(&mut tx, &rtp(5, 1, 40));
        unprotect(&mut rx, &srtp).unwrap();
        assert_eq!(unprotect(&mut rx, &srtp), Err(SrtpError::Replay));
        let next = protect(&mut tx, &rtp(6, 1, 40));
        unprotect(&mut rx, &next).unwrap();
        assert_eq!(unprotect(&mut rx, &srtp), Err(SrtpError::Replay));
    }

    #[test]
    fn out_of_order_within_window_is_accepted() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
        let plain: Vec<_> = (100..=300u16).map(|s| rtp(s, 9, 20)).collect();
        let srtp: Vec<_> = plain.iter().map(|p| protect(&mut tx, p)).collect();
        let at = |seq: u16| usize::from(seq - 100);

        for seq in [100, 105, 101, 110, 103, 102] {
            assert_eq!(unprotect(&mut rx, &srtp[at(seq)]).unwrap(), plain[at(seq)]);
        }
        assert_eq!(unprotect(&mut rx, &srtp[at(101)]), Err(SrtpError::Replay));

        unprotect(&mut rx, &srtp[at(300)]).unwrap();
        // 63 behind the highest is the oldest the window still covers; 64 is too old.
        assert_eq!(unprotect(&mut rx, &srtp[at(237)]).unwrap(), plain[at(237)]);
        assert_eq!(unprotect(&mut rx, &srtp[at(236)]), Err(SrtpError::Replay));
        assert_eq!(unprotect(&mut rx, &srtp[at(104)]), Err(SrtpError::Replay));
        assert_eq!(unprotect(&mut rx, &srtp[at(299)]).unwrap(), plain[at(299)]);
    }

    #[test]
    fn csrcs_and_header_extension_stay_in_the_clear() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
        // V=2, X=1, CC=2; two CSRCs; one-byte-header extension of one word; 8-byte payload.
        let packet = hex("92 00 0001 00000010 0000beef
             11111111 22222222
             bede0001 10aa0000
             0102030405060708");
        let srtp = protect(&mut tx, &packet);
        assert_eq!(srtp[..28], packet[..28]);
        assert_ne!(srtp[28..36], packet[28..]);
        assert_eq!(unprotect(&mut rx, &srtp).unwrap(), packet);

        // The extension claims more words than the packet holds.
        let mut short = packet.clone();
        short[23] = 9;
        assert_eq!(
            tx.protect(&short, &mut Vec::new()),
            Err(SrtpError::TooShort)
        );
    }

    #[test]
    fn malformed_packets_are_rejected() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80);
        let mut out = Vec::new();
        assert_eq!(tx.protect(&[0x80; 11], &mut out), Err(SrtpError::TooShort));
        let mut v1 = rtp(1, 1, 10);
        v1[0] = 0x40;
        assert_eq!(tx.protect(&v1, &mut out), Err(SrtpError::BadVersion));
        assert_eq!(
            rx.unprotect(&[0x80; 21], &mut out),
            Err(SrtpError::TooShort)
        );
        assert_eq!(rx.unprotect(&[], &mut out), Err(SrtpError::TooShort));
        let mut srtp = protect(&mut tx, &rtp(1, 1, 10));
        srtp[0] = 0x40;
        assert_eq!(rx.unprotect(&srtp, &mut out), Err(SrtpError::BadVersion));
        assert_eq!(
            tx.protect_rtcp(&[0x81; 7], &mut out),
            Err(SrtpError::TooShort)
        );
    }

    #[test]
    fn ssrc_changes_keep_separate_state() {
        let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_32);
        let a1 = protect(&mut tx, &rtp(50_000, 0xa, 20));
        let b1 = protect(&mut tx, &rtp(7, 0xb, 20));
        let a2 = protect(&mut tx, &rtp(50_001, 0xa, 20));
        let b2 = protect(&mut tx, &rtp(8, 0xb, 20));
        assert_eq!(a1.len(), 12 + 20 + 4);
        for p in [&a1, &b1, &b2, &a2] {
            unprotect(&mut rx, p).unwrap();
        }
        // Switching back to an earlier SSRC does not reopen its replay window.
        assert_eq!(unprotect(&mut rx, &a1), Err(SrtpError::Replay));
        assert_eq!(unprotect(&mut rx, &b1), Err(SrtpError::Replay));
    }

    #[test]
    fn protect_refuses_sequence_before_stream_start() {
        let (mut tx, _) = pair(Suite::AesCm128HmacSha1_80);
        protect(&mut tx, &rtp(10, 1, 20));
        assert_eq!(
            tx.protect(&rtp(60_000, 1, 20), &mut Vec::new()),
            Err(SrtpError::Replay)
        );
    }

    #[test]
    fn master_key_inline_round_trip() {
        let key = MasterKey::generate();
        let inline = key.inline();
        assert_eq!(inline.len(), 40);
        assert_eq!(MasterKey::from_inline(&inline).unwrap(), key);
        assert_eq!(
            MasterKey::from_inline(&format!("inline:{inline}|2^31")).unwrap(),
            key
        );
        assert_ne!(MasterKey::generate(), key);
        assert_eq!(format!("{key:?}"), "MasterKey { .. }");
    }

    #[test]
    fn master_key_rejects_bad_key_params() {
        const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        assert_eq!(
            MasterKey::from_inline(&format!("inline:{KEY}|2^20|1:4")),
            Err(SrtpError::MkiUnsupported)
        );
        assert_eq!(
            MasterKey::from_inline(&format!("inline:{KEY}|1:1")),
            Err(SrtpError::MkiUnsupported)
        );
        assert!(matches!(
            MasterKey::from_inline(&format!("inline:{KEY}|forever")),
            Err(SrtpError::InvalidKeyParams(_))
        ));
        assert!(matches!(
            MasterKey::from_inline(&format!("inline:{KEY}|2^20|2^20|2^20")),
            Err(SrtpError::InvalidKeyParams(_))
        ));
        assert!(matches!(
            MasterKey::from_inline("inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9"),
            Err(SrtpError::InvalidKeyParams(_))
        ));
        assert!(matches!(
            MasterKey::from_inline("inline:not*base64"),
            Err(SrtpError::InvalidKeyParams(_))
        ));
        assert!(matches!(
            MasterKey::from_inline("uri:https://example.com/key"),
            Err(SrtpError::InvalidKeyParams(_))
        ));
    }

    #[test]
    fn crypto_attribute_parse_and_write() {
        let c = Crypto::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20",
        )
        .unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.suite, Suite::AesCm128HmacSha1_80);
        assert_eq!(c.key.key.to_vec(), hex("59535f5f5f73656d63746c202829207b"));
        assert_eq!(c.key.salt.to_vec(), hex("093232303b7d0a7d0a756e6c6573"));
        assert_eq!(
            c.to_attr(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
        );
        assert_eq!(Crypto::parse(&c.to_attr()).unwrap(), c);

        let c = Crypto::generate(2, Suite::AesCm128HmacSha1_32);
        assert_eq!(Crypto::parse(&c.to_string()).unwrap(), c);
        assert!(c
            .to_string()
            .starts_with("2 AES_CM_128_HMAC_SHA1_32 inline:"));

        let c = Crypto::parse(
            "3 aes_cm_128_hmac_sha1_32 INLINE:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz WSH=128",
        )
        .unwrap();
        assert_eq!((c.tag, c.suite), (3, Suite::AesCm128HmacSha1_32));
    }

    #[test]
    fn crypto_attribute_rejections() {
        const KEY: &str = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        // The RFC 4568 §9.1 example carries an MKI, which we do not support.
        assert_eq!(
            Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 {KEY}|2^20|1:4")),
            Err(SrtpError::MkiUnsupported)
        );
        assert_eq!(
            Crypto::parse(&format!("1 AES_256_CM_HMAC_SHA1_80 {KEY}")),
            Err(SrtpError::UnsupportedSuite(
                "AES_256_CM_HMAC_SHA1_80".into()
            ))
        );
        assert_eq!(
            Crypto::parse(&format!("1 AEAD_AES_128_GCM {KEY}")),
            Err(SrtpError::UnsupportedSuite("AEAD_AES_128_GCM".into()))
        );
        assert_eq!(
            Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 {KEY} UNENCRYPTED_SRTP")),
            Err(SrtpError::UnsupportedSessionParam(
                "UNENCRYPTED_SRTP".into()
            ))
        );
        assert_eq!(
            Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 {KEY} KDR=1")),
            Err(SrtpError::UnsupportedSessionParam("KDR=1".into()))
        );
        assert_eq!(
            Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 {KEY}|1:1;{KEY}|1:1")),
            Err(SrtpError::MkiUnsupported)
        );
        for bad in [
            "",
            "1",
            "1 AES_CM_128_HMAC_SHA1_80",
            "x AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            "1234567890 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        ] {
            assert!(
                matches!(Crypto::parse(bad), Err(SrtpError::InvalidCrypto(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn suite_names() {
        for suite in [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32] {
            assert_eq!(suite.as_str().parse::<Suite>().unwrap(), suite);
        }
        assert_eq!(Suite::AesCm128HmacSha1_80.tag_len(), 10);
        assert_eq!(Suite::AesCm128HmacSha1_32.tag_len(), 4);
    }
}
