//! HTTP Digest authentication as SIP uses it, on both sides.
//!
//! What is implemented:
//!
//! * SIP's use of Digest, RFC 3261 §22.2 (UAS/registrar: `401` with
//!   `WWW-Authenticate`), §22.3 (proxy: `407` with `Proxy-Authenticate`) and
//!   §22.4 (the Digest profile: no `Basic`, `qop=auth`).
//! * The computation of RFC 2617 §3.2.2 / RFC 7616 §3.4: `HA1`, the `-sess`
//!   variant of `HA1` (§3.4.2), `HA2` for `qop=auth` (§3.4.3) and the
//!   response (§3.4.1), with MD5 and SHA-256. RFC 8760 §2 brings SHA-256 to
//!   SIP; §2.4 orders the challenges strongest first.
//! * The header grammar of RFC 7616 §3.3-§3.4 / RFC 7235 §2.1: quoted strings
//!   with backslash escapes, tokens, any order, case-insensitive names.
//! * Stateless server nonces (RFC 7616 §3.3 leaves the format to the server):
//!   `hex(timestamp || HMAC-SHA256(key, timestamp || client IP))`, so any
//!   node holding the key can check a nonce, a nonce only works from the
//!   address it was issued to, and an expired but genuine nonce is answered
//!   with `stale=true` (RFC 7616 §3.3) rather than a password prompt.
//!
//! Not implemented: `qop=auth-int` (SIP bodies are not integrity protected
//! by registrars in practice), `userhash` and `username*` (RFC 7616 §3.4.4,
//! §3.4.5), SHA-512-256, and nonce-count replay tracking (stateless nonces
//! can be replayed from the same IP address within their lifetime).
//!
//! Time is always a parameter (`now_secs`, seconds since the Unix epoch):
//! nothing here reads a clock.

use std::fmt;
use std::net::IpAddr;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use md5::Md5;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// How long a nonce we issue stays valid. Long enough for a phone to answer
/// the 401 and for the following REGISTER refresh cycle of a busy phone;
/// short enough that a captured nonce is soon useless.
pub(crate) const DEFAULT_NONCE_LIFETIME_SECS: u64 = 300;

/// A nonce stamped up to this far in the future is still accepted, for
/// cluster nodes sharing a key whose clocks differ slightly.
pub(crate) const MAX_CLOCK_SKEW_SECS: u64 = 30;

const NONCE_TIMESTAMP_LEN: usize = 8;
const NONCE_TAG_LEN: usize = 32;
const NONCE_HEX_LEN: usize = 2 * (NONCE_TIMESTAMP_LEN + NONCE_TAG_LEN);

/// Offending input is quoted in errors, but never more than this many
/// characters of it.
const MAX_SNIPPET_CHARS: usize = 64;

fn snippet(s: &str) -> String {
    s.chars().take(MAX_SNIPPET_CHARS).collect()
}

/// What is wrong with a `WWW-Authenticate`, `Proxy-Authenticate`,
/// `Authorization` or `Proxy-Authorization` value, or why we cannot answer a
/// challenge.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum DigestError {
    /// The header value is empty or blank.
    #[error("authentication header value is empty")]
    Empty,
    /// RFC 3261 §22.4: SIP only uses Digest (`Basic` must not be used).
    #[error("authentication scheme {scheme:?} is not Digest")]
    UnsupportedScheme { scheme: String },
    /// Something other than a token where a parameter name must be.
    #[error("expected a parameter name at byte {at}")]
    ExpectedParameterName { at: usize },
    /// A parameter name not followed by `=`.
    #[error("parameter {name:?} is not followed by `=`")]
    MissingEquals { name: String },
    /// `name=` followed by nothing.
    #[error("parameter {name:?} has no value")]
    MissingValue { name: String },
    /// A quoted string without its closing quote.
    #[error("quoted value of parameter {name:?} is not terminated")]
    UnterminatedQuotedString { name: String },
    /// Two parameters not separated by a comma.
    #[error("expected `,` after parameter {name:?} at byte {at}")]
    ExpectedComma { name: String, at: usize },
    /// RFC 7616 §3.4: each directive appears at most once.
    #[error("parameter {name:?} appears more than once")]
    DuplicateParameter { name: String },
    /// A directive the message cannot do without.
    #[error("required parameter {name} is missing")]
    MissingParameter { name: &'static str },
    /// Neither MD5, MD5-sess, SHA-256 nor SHA-256-sess.
    #[error("unsupported digest algorithm {found:?}")]
    UnsupportedAlgorithm { found: String },
    /// A qop other than `auth` (we do not do `auth-int`).
    #[error("unsupported qop {found:?}")]
    UnsupportedQop { found: String },
    /// RFC 7616 §3.4: `nc` is exactly 8 hex digits.
    #[error("nc {found:?} is not 8 hexadecimal digits")]
    BadNonceCount { found: String },
    /// None of the offered challenges can be answered.
    #[error("no challenge with a supported algorithm")]
    NoUsableChallenge,
}

/// Digest algorithm (RFC 7616 §3.3 `algorithm`, RFC 8760 for SIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    /// HA1 is re-hashed with the nonce and cnonce (RFC 7616 §3.4.2).
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    /// The token as written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Parses the `algorithm` token, case-insensitively.
    pub fn from_token(token: &str) -> Option<Algorithm> {
        [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
        ]
        .into_iter()
        .find(|a| token.eq_ignore_ascii_case(a.as_str()))
    }

    /// Whether HA1 is the session variant.
    pub fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    fn is_sha256(self) -> bool {
        matches!(self, Algorithm::Sha256 | Algorithm::Sha256Sess)
    }

    /// Higher is stronger; RFC 8760 §2.4 wants SHA-256 offered and chosen
    /// before MD5.
    fn strength(self) -> u8 {
        if self.is_sha256() {
            1
        } else {
            0
        }
    }

    /// Lower-case hex of the hash of `parts` joined by `:`.
    fn hash(self, parts: &[&str]) -> String {
        fn run<D: sha2::Digest>(parts: &[&str]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p.as_bytes());
            }
            hex::encode(d.finalize())
        }
        if self.is_sha256() {
            run::<Sha256>(parts)
        } else {
            run::<Md5>(parts)
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Profiles name algorithms by their header token (`"MD5"`, `"SHA-256"`, …).
impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let token = String::deserialize(d)?;
        Algorithm::from_token(&token).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown digest algorithm {token:?} (MD5, SHA-256, MD5-sess, SHA-256-sess)"
            ))
        })
    }
}

/// Quality of protection (RFC 7616 §3.3 `qop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Qop {
    Auth,
    /// Recognised so that it can be refused by name; never computed.
    AuthInt,
}

impl Qop {
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }

    fn from_token(token: &str) -> Option<Qop> {
        [Qop::Auth, Qop::AuthInt]
            .into_iter()
            .find(|q| token.eq_ignore_ascii_case(q.as_str()))
    }
}

/// The server's key for stateless nonces. Share it between the nodes of a
/// cluster (and across restarts, via [`NonceKey::from_secret`]) so that a
/// nonce issued by one node is accepted by another.
#[derive(Clone)]
pub(crate) struct NonceKey {
    /// HMAC-SHA256 keyed once; cloned per nonce.
    mac: HmacSha256,
    lifetime_secs: u64,
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceKey")
            .field("secret", &"<redacted>")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish()
    }
}

/// What a nonce we receive back turns out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceStatus {
    /// Ours, for this address, within its lifetime.
    Valid,
    /// Ours and for this address, but too old (or stamped too far ahead):
    /// the client should simply retry with a fresh nonce (`stale=true`).
    Stale,
    /// Not issued by us, or issued to another address, or malformed.
    Invalid,
}

impl NonceKey {
    /// A fresh random 32-byte key from the operating system's generator.
    pub fn generate() -> NonceKey {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        NonceKey::from_secret(secret)
    }

    /// A key from configured secret bytes, with the default lifetime.
    pub fn from_secret(secret: [u8; 32]) -> NonceKey {
        // HMAC pads a short key with zeros to the block size (RFC 2104 §2),
        // so keying with the zero-padded 64-byte block is the same HMAC and
        // avoids the fallible variable-length constructor.
        let mut block = [0u8; 64];
        for (dst, src) in block.iter_mut().zip(secret) {
            *dst = src;
        }
        NonceKey {
            mac: <HmacSha256 as KeyInit>::new(&block.into()),
            lifetime_secs: DEFAULT_NONCE_LIFETIME_SECS,
        }
    }

    /// Sets how long issued nonces stay [`NonceStatus::Valid`] (the tests shorten it).
    #[cfg(test)]
    pub fn with_lifetime(mut self, lifetime_secs: u64) -> NonceKey {
        self.lifetime_secs = lifetime_secs;
        self
    }

    #[cfg(test)]
    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }

    fn tag(&self, timestamp: u64, source: IpAddr) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&timestamp.to_be_bytes());
        // Canonical form, so a dual-stack socket's ::ffff:a.b.c.d and a.b.c.d
        // are the same client.
        match source.to_canonical() {
            IpAddr::V4(v4) => {
                mac.update(b"4");
                mac.update(&v4.octets());
            }
            IpAddr::V6(v6) => {
                mac.update(b"6");
                mac.update(&v6.octets());
            }
        }
        mac
    }

    /// A nonce for a client at `source`. Bound to the IP only, not the port:
    /// phones behind NAT or reconnecting over TCP answer from a new port.
    pub fn nonce(&self, now_secs: u64, source: IpAddr) -> String {
        let tag = self.tag(now_secs, source).finalize().into_bytes();
        let mut raw = Vec::with_capacity(NONCE_TIMESTAMP_LEN + NONCE_TAG_LEN);
        raw.extend_from_slice(&now_secs.to_be_bytes());
        raw.extend_from_slice(&tag);
        hex::encode(raw)
    }

    /// Checks a nonce a client sent back. The tag comparison is constant-time.
    pub fn verify_nonce(&self, nonce: &str, now_secs: u64, source: IpAddr) -> NonceStatus {
        if nonce.len() != NONCE_HEX_LEN {
            return NonceStatus::Invalid;
        }
        let Ok(raw) = hex::decode(nonce) else {
            return NonceStatus::Invalid;
        };
        let Some((stamp, tag)) = raw.split_first_chunk::<NONCE_TIMESTAMP_LEN>() else {
            return NonceStatus::Invalid;
        };
        let timestamp = u64::from_be_bytes(*stamp);
        if self.tag(timestamp, source).verify_slice(tag).is_err() {
            return NonceStatus::Invalid;
        }
        if timestamp > now_secs.saturating_add(MAX_CLOCK_SKEW_SECS)
            || now_secs.saturating_sub(timestamp) > self.lifetime_secs
        {
            NonceStatus::Stale
        } else {
            NonceStatus::Valid
        }
    }
}

/// Builds the `WWW-Authenticate` (or `Proxy-Authenticate`) values for a
/// 401/407: one per algorithm in the order given (a profile's
/// `digest_algorithms`; RFC 8760 §2.4 puts SHA-256 first, but a phone that
/// gives up on the first challenge it cannot answer needs MD5 alone), all
/// with `qop="auth"` and the same fresh nonce. An empty `algorithms` means
/// MD5. Set `stale` when [`verify`] said [`Verdict::Stale`].
pub fn challenge(
    realm: &str,
    algorithms: &[Algorithm],
    key: &NonceKey,
    now_secs: u64,
    source: IpAddr,
    stale: bool,
) -> Vec<String> {
    let mut algs: Vec<Algorithm> = Vec::new();
    let wanted = if algorithms.is_empty() {
        &[Algorithm::Md5][..]
    } else {
        algorithms
    };
    for &a in wanted {
        if !algs.contains(&a) {
            algs.push(a);
        }
    }
    let nonce = key.nonce(now_secs, source);
    algs.into_iter()
        .map(|a| {
            let mut v = format!(
                "Digest realm={}, nonce={}, algorithm={}, qop=\"auth\"",
                quote(realm),
                quote(&nonce),
                a
            );
            if stale {
                v.push_str(", stale=true");
            }
            v
        })
        .collect()
}

/// An `Authorization` / `Proxy-Authorization` value (RFC 7616 §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    /// The digest-uri. RFC 3261 §22.4 wants it checked against the
    /// Request-URI by the caller.
    pub uri: String,
    pub response: String,
    /// MD5 when the header has no `algorithm` (RFC 7616 §3.3).
    pub algorithm: Algorithm,
    pub cnonce: Option<String>,
    pub qop: Option<Qop>,
    /// As sent: 8 hex digits, hashed verbatim.
    pub nc: Option<String>,
    pub opaque: Option<String>,
}

impl fmt::Display for Credentials {
    /// The header value, e.g. `Digest username="alice", realm=...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            quote(&self.username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.uri),
            quote(&self.response),
            self.algorithm
        )?;
        if let Some(c) = &self.cnonce {
            write!(f, ", cnonce={}", quote(c))?;
        }
        if let Some(q) = self.qop {
            write!(f, ", qop={}", q.as_str())?;
        }
        if let Some(nc) = &self.nc {
            write!(f, ", nc={nc}")?;
        }
        if let Some(o) = &self.opaque {
            write!(f, ", opaque={}", quote(o))?;
        }
        Ok(())
    }
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` value (RFC 7616 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    /// MD5 when the header has no `algorithm`.
    pub algorithm: Algorithm,
    /// Offered qop values we recognise; empty when the server sent no `qop`
    /// (RFC 2069 compatibility).
    pub qop: Vec<Qop>,
    pub opaque: Option<String>,
    /// The previous response was right but its nonce had expired: retry
    /// without asking anyone for a password.
    pub stale: bool,
    pub domain: Option<String>,
}

/// Parses an `Authorization` / `Proxy-Authorization` value.
pub(crate) fn parse_authorization(value: &str) -> Result<Credentials, DigestError> {
    let mut params = parse_digest_params(value)?;
    let username = params.take_required("username")?;
    let realm = params.take_required("realm")?;
    let nonce = params.take_required("nonce")?;
    let uri = params.take_required("uri")?;
    let response = params.take_required("response")?;
    let algorithm = params.take_algorithm()?;
    let cnonce = params.take("cnonce");
    let qop = match params.take("qop") {
        Some(q) => {
            Some(Qop::from_token(&q).ok_or(DigestError::UnsupportedQop { found: snippet(&q) })?)
        }
        None => None,
    };
    let nc = params.take("nc");
    if let Some(n) = &nc {
        if n.len() != 8 || !n.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DigestError::BadNonceCount { found: snippet(n) });
        }
    }
    if qop.is_some() {
        // RFC 7616 §3.4: with qop, cnonce and nc are mandatory.
        if cnonce.is_none() {
            return Err(DigestError::MissingParameter { name: "cnonce" });
        }
        if nc.is_none() {
            return Err(DigestError::MissingParameter { name: "nc" });
        }
    }
    let opaque = params.take("opaque");
    Ok(Credentials {
        username,
        realm,
        nonce,
        uri,
        response,
        algorithm,
        cnonce,
        qop,
        nc,
        opaque,
    })
}

/// Parses a `WWW-Authenticate` / `Proxy-Authenticate` value.
pub(crate) fn parse_challenge(value: &str) -> Result<Challenge, DigestError> {
    let mut params = parse_digest_params(value)?;
    let realm = params.take_required("realm")?;
    let nonce = params.take_required("nonce")?;
    let algorithm = params.take_algorithm()?;
    let qop = match params.take("qop") {
        Some(list) => {
            // RFC 7616 §3.3: unrecognised options are ignored, but a list
            // with nothing we recognise cannot be answered.
            let known: Vec<Qop> = list
                .split(',')
                .filter_map(|q| Qop::from_token(q.trim()))
                .collect();
            if known.is_empty() {
                return Err(DigestError::UnsupportedQop {
                    found: snippet(&list),
                });
            }
            known
        }
        None => Vec::new(),
    };
    let stale = params
        .take("stale")
        .is_some_and(|s| s.eq_ignore_ascii_case("true"));
    Ok(Challenge {
        realm,
        nonce,
        algorithm,
        qop,
        opaque: params.take("opaque"),
        stale,
        domain: params.take("domain"),
    })
}

/// Of several challenge values (one per header), the strongest one we can
/// answer (RFC 8760 §2.4: SHA-256 before MD5).
pub(crate) fn best_challenge<'a, I>(values: I) -> Result<Challenge, DigestError>
where
    I: IntoIterator<Item = &'a str>,
{
    values
        .into_iter()
        .filter_map(|v| parse_challenge(v).ok())
        .filter(|c| c.qop.is_empty() || c.qop.contains(&Qop::Auth))
        .fold(None, |best: Option<Challenge>, c| match best {
            Some(b) if b.algorithm.strength() >= c.algorithm.strength() => Some(b),
            _ => Some(c),
        })
        .ok_or(DigestError::NoUsableChallenge)
}

/// A fresh client nonce: 16 random bytes as hex.
pub(crate) fn new_cnonce() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Answers a challenge: the value for `Authorization` (after a 401) or
/// `Proxy-Authorization` (after a 407).
///
/// `qop=auth` is used when offered; the algorithm and `opaque` are echoed.
/// `nc` counts the requests made with this nonce, starting at 1. A challenge
/// offering only `auth-int` is refused with [`DigestError::UnsupportedQop`].
pub fn respond(
    challenge: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<String, DigestError> {
    let qop = if challenge.qop.contains(&Qop::Auth) {
        Some(Qop::Auth)
    } else if challenge.qop.is_empty() {
        None
    } else {
        return Err(DigestError::UnsupportedQop {
            found: Qop::AuthInt.as_str().to_owned(),
        });
    };
    let alg = challenge.algorithm;
    let nc = qop.map(|_| format!("{nc:08x}"));
    // cnonce goes with qop (RFC 2617 §3.2.2); -sess also needs it for HA1.
    let cnonce = (qop.is_some() || alg.is_sess()).then(|| cnonce.to_owned());
    let ha1 = session_ha1(
        alg,
        alg.hash(&[username, &challenge.realm, password]),
        &challenge.nonce,
        cnonce.as_deref().unwrap_or_default(),
    );
    let response = response_hash(
        alg,
        &ha1,
        &challenge.nonce,
        qop.zip(nc.as_deref()).zip(cnonce.as_deref()),
        method,
        uri,
    );
    let creds = Credentials {
        username: username.to_owned(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_owned(),
        response,
        algorithm: alg,
        cnonce,
        qop,
        nc,
        opaque: challenge.opaque.clone(),
    };
    Ok(creds.to_string())
}

/// What the registrar knows about a user: the password itself, or the HA1
/// hashes (`H(username:realm:password)`) so that a stolen database does not
/// reveal passwords. Both hashes are needed to accept both algorithms.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Password(String),
    Ha1 { md5: String, sha256: String },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Secret::Password(<redacted>)"),
            Secret::Ha1 { .. } => f.write_str("Secret::Ha1(<redacted>)"),
        }
    }
}

/// Which kind of [`Secret`] a user store holds, so that an unknown user costs
/// the same work as a known one (see [`verify_unknown_user`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    Password,
    Ha1,
}

impl Secret {
    /// The HA1 pair to store instead of `password`.
    pub fn hashed(username: &str, realm: &str, password: &str) -> Secret {
        Secret::Ha1 {
            md5: Algorithm::Md5.hash(&[username, realm, password]),
            sha256: Algorithm::Sha256.hash(&[username, realm, password]),
        }
    }

    pub fn kind(&self) -> SecretKind {
        match self {
            Secret::Password(_) => SecretKind::Password,
            Secret::Ha1 { .. } => SecretKind::Ha1,
        }
    }

    fn dummy(kind: SecretKind) -> Secret {
        match kind {
            SecretKind::Password => Secret::Password(String::new()),
            SecretKind::Ha1 => Secret::Ha1 {
                md5: "0".repeat(32),
                sha256: "0".repeat(64),
            },
        }
    }
}

/// The registrar's decision on a request carrying credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Authenticated.
    Ok,
    /// The response was right but the nonce expired: challenge again with
    /// `stale=true`.
    Stale,
    /// Wrong password, unknown user, foreign or forged nonce, wrong realm,
    /// or a qop other than `auth`: challenge again without `stale`.
    Fail,
}

/// Checks `creds` (from [`parse_authorization`]) for a request with `method`
/// from `source`, against the user's `secret` in our `realm`.
///
/// The response is compared in constant time, and the hashes are computed
/// whatever the nonce and realm turn out to be, so the time taken does not
/// tell a wrong password from a bad nonce. The caller should also check
/// `creds.uri` against the Request-URI (RFC 3261 §22.4).
pub(crate) fn verify(
    creds: &Credentials,
    method: &str,
    secret: &Secret,
    realm: &str,
    key: &NonceKey,
    now_secs: u64,
    source: IpAddr,
) -> Verdict {
    let expected = expected_response(creds, method, secret, realm);
    let provided = creds.response.to_ascii_lowercase();
    let response_ok = bool::from(expected.as_bytes().ct_eq(provided.as_bytes()));
    // We only ever challenge with qop="auth" (RFC 7616 makes qop mandatory).
    let accepted = response_ok && creds.realm == realm && creds.qop == Some(Qop::Auth);
    match (accepted, key.verify_nonce(&creds.nonce, now_secs, source)) {
        (true, NonceStatus::Valid) => Verdict::Ok,
        (true, NonceStatus::Stale) => Verdict::Stale,
        _ => Verdict::Fail,
    }
}

/// Whether a failed `creds` was a guess at the password worth counting against its source:
/// its nonce is one we issued to `source` (fresh or stale). Credentials with a nonce that is
/// not ours, or was issued to another address (a spoofed packet, a phone still holding a nonce
/// from before a restart), say nothing about the password and are not counted, so nobody can
/// get a phone blocked by sending garbage in its name.
pub(crate) fn is_guess(creds: &Credentials, key: &NonceKey, now_secs: u64, source: IpAddr) -> bool {
    key.verify_nonce(&creds.nonce, now_secs, source) != NonceStatus::Invalid
}

/// For a username the store does not know: does the same work as
/// [`verify`] against a dummy secret of the store's `kind`, and returns
/// [`Verdict::Fail`]. The registrar answers it exactly as a wrong password,
/// so callers cannot probe which usernames exist.
pub(crate) fn verify_unknown_user(
    creds: &Credentials,
    method: &str,
    kind: SecretKind,
    realm: &str,
    key: &NonceKey,
    now_secs: u64,
    source: IpAddr,
) -> Verdict {
    let dummy = Secret::dummy(kind);
    let verdict = verify(creds, method, &dummy, realm, key, now_secs, source);
    // Keep the computation from being optimised away; ignore its outcome.
    let _ = std::hint::black_box(verdict);
    Verdict::Fail
}

/// The response the client should have sent, in lower-case hex.
fn expected_response(creds: &Credentials, method: &str, secret: &Secret, realm: &str) -> String {
    let alg = creds.algorithm;
    let ha1 = match secret {
        Secret::Password(p) => alg.hash(&[&creds.username, realm, p]),
        Secret::Ha1 { md5, sha256 } => {
            if alg.is_sha256() {
                sha256.to_ascii_lowercase()
            } else {
                md5.to_ascii_lowercase()
            }
        }
    };
    let cnonce = creds.cnonce.as_deref().unwrap_or_default();
    let ha1 = session_ha1(alg, ha1, &creds.nonce, cnonce);
    // Always hash in the qop form: a request without qop fails anyway, and
    // this keeps the work the same.
    let nc = creds.nc.as_deref().unwrap_or_default();
    response_hash(
        alg,
        &ha1,
        &creds.nonce,
        Some(((Qop::Auth, nc), cnonce)),
        method,
        &creds.uri,
    )
}

/// RFC 7616 §3.4.2: for `-sess`, HA1 = H(H(user:realm:pass):nonce:cnonce).
fn session_ha1(alg: Algorithm, ha1: String, nonce: &str, cnonce: &str) -> String {
    if alg.is_sess() {
        alg.hash(&[&ha1, nonce, cnonce])
    } else {
        ha1
    }
}

/// RFC 7616 §3.4.1 (and the RFC 2069 form when there is no qop).
fn response_hash(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    qop: Option<((Qop, &str), &str)>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hash(&[method, uri]);
    match qop {
        Some(((q, nc), cnonce)) => alg.hash(&[ha1, nonce, nc, cnonce, q.as_str(), &ha2]),
        None => alg.hash(&[ha1, nonce, &ha2]),
    }
}

/// A quoted-string (RFC 7230 §3.2.6) for `s`. CR and LF are dropped so that
/// a value can never break out of its header line.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => {}
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parameters of a Digest header, names lower-cased.
struct Params(Vec<(String, String)>);

impl Params {
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.swap_remove(i).1)
    }

    fn take_required(&mut self, name: &'static str) -> Result<String, DigestError> {
        self.take(name)
            .ok_or(DigestError::MissingParameter { name })
    }

    fn take_algorithm(&mut self) -> Result<Algorithm, DigestError> {
        match self.take("algorithm") {
            Some(a) => Algorithm::from_token(&a)
                .ok_or(DigestError::UnsupportedAlgorithm { found: snippet(&a) }),
            None => Ok(Algorithm::Md5),
        }
    }
}

/// RFC 7230 §3.2.6 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits `Digest a=b, c="d"` into its parameters. Also accepts line folds
/// and empty list elements (RFC 7230 §7), and unquoted values where quotes
/// are due, which some phones send.
fn parse_digest_params(value: &str) -> Result<Params, DigestError> {
    let text = value.trim();
    if text.is_empty() {
        return Err(DigestError::Empty);
    }
    let (scheme, rest) = text
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::UnsupportedScheme {
            scheme: snippet(scheme),
        });
    }
    let offset = text.len() - rest.len();
    let bytes = rest.as_bytes();
    let at = |i: usize| i + offset;
    let mut i = 0;
    let mut params: Vec<(String, String)> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while bytes.get(*i).is_some_and(|b| b.is_ascii_whitespace()) {
            *i += 1;
        }
    };
    loop {
        while bytes
            .get(i)
            .is_some_and(|&b| b.is_ascii_whitespace() || b == b',')
        {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while bytes.get(i).is_some_and(|&b| is_tchar(b)) {
            i += 1;
        }
        let name = match rest.get(start..i) {
            Some(n) if !n.is_empty() => n.to_ascii_lowercase(),
            _ => return Err(DigestError::ExpectedParameterName { at: at(start) }),
        };
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b'=') {
            return Err(DigestError::MissingEquals {
                name: snippet(&name),
            });
        }
        i += 1;
        skip_ws(&mut i);
        let value = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut buf: Vec<u8> = Vec::new();
            loop {
                match bytes.get(i) {
                    None => {
                        return Err(DigestError::UnterminatedQuotedString {
                            name: snippet(&name),
                        })
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => match bytes.get(i + 1) {
                        Some(&escaped) => {
                            buf.push(escaped);
                            i += 2;
                        }
                        None => {
                            return Err(DigestError::UnterminatedQuotedString {
                                name: snippet(&name),
                            })
                        }
                    },
                    Some(&b) => {
                        buf.push(b);
                        i += 1;
                    }
                }
            }
            // Only ASCII backslashes were removed, so this is still UTF-8.
            String::from_utf8_lossy(&buf).into_owned()
        } else {
            let start = i;
            while bytes
                .get(i)
                .is_some_and(|&b| !b.is_ascii_whitespace() && b != b',' && b != b'"')
            {
                i += 1;
            }
            match rest.get(start..i) {
                Some(v) if !v.is_empty() => v.to_owned(),
                _ => {
                    return Err(DigestError::MissingValue {
                        name: snippet(&name),
                    })
                }
            }
        };
        skip_ws(&mut i);
        if i < bytes.len() && bytes.get(i) != Some(&b',') {
            return Err(DigestError::ExpectedComma {
                name: snippet(&name),
                at: at(i),
            });
        }
        if params.iter().any(|(n, _)| *n == name) {
            return Err(DigestError::DuplicateParameter {
                name: snippet(&name),
            });
        }
        params.push((name, value));
    }
    Ok(Params(params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const PHONE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    const NOW: u64 = 1_700_000_000;

    fn key() -> NonceKey {
        NonceKey::from_secret([7u8; 32])
    }

    const RFC2617_AUTHORIZATION: &str = r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;

    const RFC2617_CHALLENGE: &str = r#"Digest
                 realm="testrealm@host.com",
                 qop="auth,auth-int",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;

    #[test]
    fn rfc2617_example_server_side() {
        let creds = parse_authorization(RFC2617_AUTHORIZATION).expect("parses");
        assert_eq!(creds.username, "Mufasa");
        assert_eq!(creds.algorithm, Algorithm::Md5);
        assert_eq!(creds.qop, Some(Qop::Auth));
        assert_eq!(creds.nc.as_deref(), Some("00000001"));
        assert_eq!(
            creds.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
        let secret = Secret::Password("Circle Of Life".to_owned());
        assert_eq!(
            expected_response(&creds, "GET", &secret, "testrealm@host.com"),
            "6629fae49393a05397450978507c4ef1"
        );
        let stored = Secret::hashed("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(
            expected_response(&creds, "GET", &stored, "testrealm@host.com"),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    #[test]
    fn rfc2617_example_client_side() {
        let ch = parse_challenge(RFC2617_CHALLENGE).expect("parses");
        assert_eq!(ch.qop, vec![Qop::Auth, Qop::AuthInt]);
        assert_eq!(ch.algorithm, Algorithm::Md5);
        let v = respond(
            &ch,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        )
        .expect("responds");
        let creds = parse_authorization(&v).expect("own output parses");
        assert_eq!(creds.response, "6629fae49393a05397450978507c4ef1");
        assert_eq!(creds.opaque, ch.opaque);
        assert_eq!(creds.nc.as_deref(), Some("00000001"));
        assert_eq!(creds.qop, Some(Qop::Auth));
    }

    /// RFC 7616 §3.9.1. Note the password there is "Circle of Life" (lower
    /// case "of"), unlike RFC 2617's "Circle Of Life"; both responses below
    /// were checked independently with Python's hashlib.
    #[test]
    fn rfc7616_example() {
        let challenge = r#"Digest
            realm="http-auth@example.org",
            qop="auth, auth-int",
            algorithm=SHA-256,
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
        let ch = parse_challenge(challenge).expect("parses");
        assert_eq!(ch.algorithm, Algorithm::Sha256);
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let v = respond(
            &ch,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            cnonce,
            1,
        )
        .expect("responds");
        let creds = parse_authorization(&v).expect("parses");
        assert_eq!(
            creds.response,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert_eq!(creds.algorithm, Algorithm::Sha256);

        let mut md5 = ch.clone();
        md5.algorithm = Algorithm::Md5;
        let v = respond(
            &md5,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            cnonce,
            1,
        )
        .expect("responds");
        let creds = parse_authorization(&v).expect("parses");
        assert_eq!(creds.response, "8ca523f5e9506fed4657c9700eebdbec");
        let stored = Secret::hashed("Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(
            expected_response(&creds, "GET", &stored, "http-auth@example.org"),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    fn round_trip(alg: Algorithm, secret: &Secret, password: &str) -> Verdict {
        let realm = "pbx.example.com";
        let values = challenge(realm, &[alg], &key(), NOW, PHONE, false);
        assert_eq!(values.len(), 1);
        let ch = parse_challenge(&values[0]).expect("own challenge parses");
        assert_eq!(ch.algorithm, alg);
        let uri = "sip:pbx.example.com";
        let v =
            respond(&ch, "1001", password, "REGISTER", uri, &new_cnonce(), 1).expect("responds");
        let creds = parse_authorization(&v).expect("own response parses");
        verify(&creds, "REGISTER", secret, realm, &key(), NOW + 5, PHONE)
    }

    #[test]
    fn round_trip_all_algorithms() {
        let realm = "pbx.example.com";
        for alg in [
            Algorithm::Md5,
            Algorithm::Sha256,
            Algorithm::Md5Sess,
            Algorithm::Sha256Sess,
        ] {
            let pw = Secret::Password("s3cret \"quoted\"".to_owned());
            let ha1 = Secret::hashed("1001", realm, "s3cret \"quoted\"");
            assert_eq!(
                round_trip(alg, &pw, "s3cret \"quoted\""),
                Verdict::Ok,
                "{alg}"
            );
            assert_eq!(
                round_trip(alg, &ha1, "s3cret \"quoted\""),
                Verdict::Ok,
                "{alg}"
            );
            assert_eq!(round_trip(alg, &pw, "wrong"), Verdict::Fail, "{alg}");
            assert_eq!(round_trip(alg, &ha1, "wrong"), Verdict::Fail, "{alg}");
        }
    }

    fn signed_in(password: &str, at: u64, source: IpAddr) -> Credentials {
        let realm = "pbx.example.com";
        let offered = [Algorithm::Md5, Algorithm::Sha256];
        let values = challenge(realm, &offered, &key(), at, source, false);
        let ch = best_challenge(values.iter().map(String::as_str)).expect("usable");
        let v = respond(
            &ch,
            "1001",
            password,
            "INVITE",
            "sip:200@pbx.example.com",
            "abc",
            1,
        )
        .expect("responds");
        parse_authorization(&v).expect("parses")
    }

    #[test]
    fn stale_nonce_and_foreign_source() {
        let realm = "pbx.example.com";
        let secret = Secret::Password("pw".to_owned());
        let creds = signed_in("pw", NOW, PHONE);
        assert_eq!(
            creds.algorithm,
            Algorithm::Sha256,
            "the client answers the strongest, whatever the order offered"
        );
        let check = |c: &Credentials, now: u64, src: IpAddr| {
            verify(c, "INVITE", &secret, realm, &key(), now, src)
        };
        assert_eq!(check(&creds, NOW, PHONE), Verdict::Ok);
        assert_eq!(check(&creds, NOW + 300, PHONE), Verdict::Ok);
        assert_eq!(check(&creds, NOW + 301, PHONE), Verdict::Stale);
        // Stamped in the future beyond the skew allowance.
        assert_eq!(check(&creds, NOW - 31, PHONE), Verdict::Stale);
        assert_eq!(check(&creds, NOW - 30, PHONE), Verdict::Ok);
        // Stale but wrong password is a plain failure.
        let wrong = signed_in("nope", NOW, PHONE);
        assert_eq!(check(&wrong, NOW + 301, PHONE), Verdict::Fail);
        // Another source address, with or without a new port.
        let other = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 8));
        assert_eq!(check(&creds, NOW, other), Verdict::Fail);
        // The same IPv4 client seen through a dual-stack socket.
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
        assert_eq!(check(&creds, NOW, mapped), Verdict::Ok);
        // Another method than the one signed.
        assert_eq!(
            verify(&creds, "BYE", &secret, realm, &key(), NOW, PHONE),
            Verdict::Fail
        );
        // Another realm.
        assert_eq!(
            verify(&creds, "INVITE", &secret, "other", &key(), NOW, PHONE),
            Verdict::Fail
        );
        // Another server key.
        let k2 = NonceKey::from_secret([8u8; 32]);
        assert_eq!(
            verify(&creds, "INVITE", &secret, realm, &k2, NOW, PHONE),
            Verdict::Fail
        );
        // A tampered timestamp.
        let mut forged = creds.clone();
        forged.nonce.replace_range(0..2, "ff");
        assert_eq!(check(&forged, NOW, PHONE), Verdict::Fail);
        // No qop (RFC 2069 style) is refused.
        let mut legacy = creds.clone();
        legacy.qop = None;
        assert_eq!(check(&legacy, NOW, PHONE), Verdict::Fail);
    }

    #[test]
    fn nonce_status() {
        let k = key().with_lifetime(60);
        assert_eq!(k.lifetime_secs(), 60);
        let n = k.nonce(NOW, PHONE);
        assert_eq!(n.len(), NONCE_HEX_LEN);
        assert_eq!(k.verify_nonce(&n, NOW + 60, PHONE), NonceStatus::Valid);
        assert_eq!(k.verify_nonce(&n, NOW + 61, PHONE), NonceStatus::Stale);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(k.verify_nonce(&n, NOW, v6), NonceStatus::Invalid);
        assert_eq!(
            k.verify_nonce(&k.nonce(NOW, v6), NOW, v6),
            NonceStatus::Valid
        );
        assert_eq!(k.verify_nonce("", NOW, PHONE), NonceStatus::Invalid);
        assert_eq!(
            k.verify_nonce(&"z".repeat(80), NOW, PHONE),
            NonceStatus::Invalid
        );
        assert_eq!(
            k.verify_nonce(&"é".repeat(40), NOW, PHONE),
            NonceStatus::Invalid
        );
        // Different keys give different nonces; generated keys differ.
        assert_ne!(
            NonceKey::generate().nonce(NOW, PHONE),
            NonceKey::generate().nonce(NOW, PHONE)
        );
        assert!(!format!("{k:?}").contains("07"));
    }

    #[test]
    fn unknown_user_indistinguishable() {
        let realm = "pbx.example.com";
        // Even a response computed with the dummy secret does not pass.
        let values = challenge(realm, &[Algorithm::Md5], &key(), NOW, PHONE, false);
        let ch = parse_challenge(&values[0]).expect("parses");
        let v = respond(&ch, "ghost", "", "REGISTER", "sip:x", "c", 1).expect("responds");
        let creds = parse_authorization(&v).expect("parses");
        for kind in [SecretKind::Password, SecretKind::Ha1] {
            assert_eq!(
                verify_unknown_user(&creds, "REGISTER", kind, realm, &key(), NOW, PHONE),
                Verdict::Fail
            );
        }
        assert_eq!(Secret::Password("x".into()).kind(), SecretKind::Password);
        assert!(!format!("{:?}", Secret::Password("hunter2".into())).contains("hunter2"));
    }

    #[test]
    fn challenge_format() {
        let v = challenge(
            "a \"b\"",
            &[Algorithm::Md5, Algorithm::Sha256, Algorithm::Md5],
            &key(),
            NOW,
            PHONE,
            true,
        );
        assert_eq!(v.len(), 2);
        assert!(
            v[0].starts_with("Digest realm=\"a \\\"b\\\"\", nonce=\""),
            "{}",
            v[0]
        );
        assert!(
            v[0].contains("algorithm=MD5, qop=\"auth\", stale=true"),
            "offered in the order given: {}",
            v[0]
        );
        assert!(v[1].contains("algorithm=SHA-256,"), "{}", v[1]);
        let ch = parse_challenge(&v[0]).expect("parses");
        assert_eq!(ch.realm, "a \"b\"");
        assert!(ch.stale);
        assert_eq!(ch.qop, vec![Qop::Auth]);
        assert_eq!(
            key().verify_nonce(&ch.nonce, NOW, PHONE),
            NonceStatus::Valid
        );
    }

    #[test]
    fn lenient_syntax() {
        // Any order, odd case, quoted qop, unquoted values, empty elements,
        // unknown parameters.
        let v = "dIgEsT  ,RESPONSE=\"ABCDEF0123\" ,, Nonce=abc,uri=\"sip:a@b;transport=tcp\",\
                 username=\"al\\\\ice\", Realm = \"r\" , qop=\"auth\", NC=0000000a, cnonce=xyz, \
                 algorithm=md5-SESS, foo=bar";
        let c = parse_authorization(v).expect("parses");
        assert_eq!(c.username, "al\\ice");
        assert_eq!(c.realm, "r");
        assert_eq!(c.nonce, "abc");
        assert_eq!(c.uri, "sip:a@b;transport=tcp");
        assert_eq!(c.algorithm, Algorithm::Md5Sess);
        assert_eq!(c.nc.as_deref(), Some("0000000a"));
        assert_eq!(c.cnonce.as_deref(), Some("xyz"));
        // Display round trip.
        assert_eq!(parse_authorization(&c.to_string()), Ok(c.clone()));
        // Challenge without qop (RFC 2069 server): answered without qop.
        let ch = parse_challenge("Digest realm=\"r\", nonce=\"n\"").expect("parses");
        let v = respond(&ch, "u", "p", "REGISTER", "sip:r", "c", 1).expect("responds");
        assert!(
            !v.contains("qop") && !v.contains("cnonce") && !v.contains("nc="),
            "{v}"
        );
        assert_eq!(
            parse_authorization(&v).map(|c| c.response),
            Ok(Algorithm::Md5.hash(&[
                &Algorithm::Md5.hash(&["u", "r", "p"]),
                "n",
                &Algorithm::Md5.hash(&["REGISTER", "sip:r"])
            ]))
        );
    }

    #[test]
    fn best_challenge_prefers_sha256() {
        let md5 = "Digest realm=\"r\", nonce=\"1\", qop=\"auth\"";
        let sha = "Digest realm=\"r\", nonce=\"2\", algorithm=SHA-256, qop=\"auth\"";
        let sha512 = "Digest realm=\"r\", nonce=\"3\", algorithm=SHA-512-256, qop=\"auth\"";
        let authint = "Digest realm=\"r\", nonce=\"4\", algorithm=SHA-256, qop=\"auth-int\"";
        let basic = "Basic realm=\"r\"";
        let pick = |v: &[&str]| best_challenge(v.iter().copied()).map(|c| c.nonce);
        assert_eq!(pick(&[md5, sha]), Ok("2".to_owned()));
        assert_eq!(pick(&[sha, md5]), Ok("2".to_owned()));
        assert_eq!(pick(&[sha512, authint, basic, md5]), Ok("1".to_owned()));
        assert_eq!(pick(&[sha512, basic]), Err(DigestError::NoUsableChallenge));
        let ch = parse_challenge(authint).expect("parses");
        assert_eq!(
            respond(&ch, "u", "p", "INVITE", "sip:x", "c", 1),
            Err(DigestError::UnsupportedQop {
                found: "auth-int".to_owned()
            })
        );
    }

    #[test]
    fn typed_errors() {
        let full = "username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:x\", response=\"0\"";
        let a = |v: &str| parse_authorization(v).err();
        assert_eq!(a(""), Some(DigestError::Empty));
        assert_eq!(a("   "), Some(DigestError::Empty));
        assert_eq!(
            a("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Some(DigestError::UnsupportedScheme {
                scheme: "Basic".to_owned()
            })
        );
        assert_eq!(
            a("Digest username=\"u"),
            Some(DigestError::UnterminatedQuotedString {
                name: "username".to_owned()
            })
        );
        assert_eq!(
            a("Digest username=\"u\\"),
            Some(DigestError::UnterminatedQuotedString {
                name: "username".to_owned()
            })
        );
        assert_eq!(
            a("Digest username"),
            Some(DigestError::MissingEquals {
                name: "username".to_owned()
            })
        );
        assert_eq!(
            a("Digest username=, realm=r"),
            Some(DigestError::MissingValue {
                name: "username".to_owned()
            })
        );
        assert_eq!(
            a("Digest username=\"u\" realm=\"r\""),
            Some(DigestError::ExpectedComma {
                name: "username".to_owned(),
                at: 20
            })
        );
        assert_eq!(
            a("Digest =x"),
            Some(DigestError::ExpectedParameterName { at: 7 })
        );
        assert_eq!(
            a(&format!("Digest {full}, Realm=\"again\"")),
            Some(DigestError::DuplicateParameter {
                name: "realm".to_owned()
            })
        );
        assert_eq!(
            a("Digest realm=\"r\""),
            Some(DigestError::MissingParameter { name: "username" })
        );
        assert_eq!(
            a(&format!("Digest {full}, algorithm=SHA-512-256")),
            Some(DigestError::UnsupportedAlgorithm {
                found: "SHA-512-256".to_owned()
            })
        );
        assert_eq!(
            a(&format!(
                "Digest {full}, qop=auth-conf, nc=00000001, cnonce=c"
            )),
            Some(DigestError::UnsupportedQop {
                found: "auth-conf".to_owned()
            })
        );
        assert_eq!(
            a(&format!("Digest {full}, qop=auth, nc=1, cnonce=c")),
            Some(DigestError::BadNonceCount {
                found: "1".to_owned()
            })
        );
        assert_eq!(
            a(&format!("Digest {full}, qop=auth, nc=00000001")),
            Some(DigestError::MissingParameter { name: "cnonce" })
        );
        assert_eq!(
            a(&format!("Digest {full}, qop=auth, cnonce=c")),
            Some(DigestError::MissingParameter { name: "nc" })
        );
        assert!(
            a(&format!("Digest {full}")).is_none(),
            "qop-less credentials parse"
        );
        let c = |v: &str| parse_challenge(v).err();
        assert_eq!(
            c("Digest realm=\"r\""),
            Some(DigestError::MissingParameter { name: "nonce" })
        );
        assert_eq!(
            c("Digest realm=\"r\", nonce=\"n\", qop=\"auth-conf\""),
            Some(DigestError::UnsupportedQop {
                found: "auth-conf".to_owned()
            })
        );
        // Error text quotes only a bounded snippet.
        let long = format!("X{}", "y".repeat(10_000));
        let msg = a(&long).map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.len() < 200, "{msg}");
    }

    #[test]
    fn header_values_cannot_be_injected() {
        let ch = Challenge {
            realm: "r\r\nVia: evil".to_owned(),
            nonce: "n".to_owned(),
            algorithm: Algorithm::Md5,
            qop: vec![Qop::Auth],
            opaque: None,
            stale: false,
            domain: None,
        };
        let v = respond(&ch, "u\n", "p", "REGISTER", "sip:r", "c", 1).expect("responds");
        assert!(!v.contains('\r') && !v.contains('\n'), "{v}");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn header_like() -> impl Strategy<Value = String> {
            const NAMES: [&str; 8] = [
                "username", "realm", "nonce", "uri", "response", "cnonce", "opaque", "domain",
            ];
            // Each well-known parameter present nine times in ten, with a
            // quoted value that may contain escapes.
            let quoted = proptest::collection::vec(
                (
                    proptest::bool::weighted(0.9),
                    "([a-z0-9 :@;=,]|\\\\[\"\\\\a]){0,10}",
                ),
                NAMES.len(),
            )
            .prop_map(|values| {
                NAMES
                    .iter()
                    .zip(values)
                    .filter(|(_, (keep, _))| *keep)
                    .map(|(name, (_, value))| format!("{name}=\"{value}\""))
                    .collect::<Vec<_>>()
            });
            let extra = proptest::collection::vec(
                prop_oneof![
                    6 => "qop=(auth|\"auth\"|\"auth,auth-int\"|auth-int)|nc=(0000000[0-9a-f]|1|zz)|algorithm=(MD5|SHA-256|md5-sess|SHA-256-sess|SHA-512-256)|stale=(true|FALSE)",
                    1 => "[a-zA-Z-]{0,9}=\"([^\"\\\\]|\\\\.){0,12}\"?",
                    1 => "[a-zA-Z-]{0,9}=[a-zA-Z0-9/+=-]{0,12}",
                    1 => "[ ,\"\\\\=]{0,3}",
                    1 => ".{0,6}",
                ],
                0..6,
            );
            let params = (quoted, extra)
                .prop_map(|(mut q, e)| {
                    q.extend(e);
                    q
                })
                .prop_shuffle();
            (
                prop_oneof![
                    6 => Just("Digest ".to_owned()),
                    1 => Just("digest".to_owned()),
                    1 => Just(String::new()),
                    1 => "[A-Za-z]{0,6} ",
                ],
                params,
                prop_oneof![Just(","), Just(", "), Just(" "), Just(",\r\n ")],
            )
                .prop_map(|(scheme, params, sep)| format!("{scheme}{}", params.join(sep)))
        }

        fn exercise(s: &str) {
            if let Ok(c) = parse_authorization(s) {
                // Our own rendering of parsed credentials parses back (the
                // same, unless CR/LF had to be dropped from a value).
                let again = parse_authorization(&c.to_string());
                let dbg = format!("{c:?}");
                if dbg.contains("\\r") || dbg.contains("\\n") {
                    assert!(again.is_ok());
                } else {
                    assert_eq!(again.ok(), Some(c.clone()));
                }
                let _ = verify(
                    &c,
                    "REGISTER",
                    &Secret::Password("p".into()),
                    "r",
                    &key(),
                    NOW,
                    PHONE,
                );
            }
            if let Ok(ch) = parse_challenge(s) {
                if let Ok(v) = respond(&ch, "u", "p", "REGISTER", "sip:r", "c", u32::MAX) {
                    assert!(parse_authorization(&v).is_ok(), "{v}");
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn parse_authorization_never_panics(s in ".{0,200}") {
                exercise(&s);
            }

            #[test]
            fn header_like_input_never_panics(s in header_like()) {
                exercise(&s);
            }

            #[test]
            fn nonce_check_never_panics(s in ".{0,100}", now in any::<u64>()) {
                let _ = key().verify_nonce(&s, now, PHONE);
            }
        }
    }
}
