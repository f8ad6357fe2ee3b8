//! Header names and typed header values (RFC 3261 §7.3, §20, §25.1).
//!
//! Names are case-insensitive and have compact forms (§7.3.3); list-valued headers may be
//! repeated or comma-joined (§7.3.1) and are stored one value per entry so that `Via: a, b` and
//! two Via lines are the same thing to every caller. Values keep their text as received so a
//! UA can echo them; typed views ([`NameAddr`], [`Via`], [`CSeq`]) are parsed on demand with
//! the same strictness the message parser applied on arrival.

use std::fmt;

use super::error::ParseError;
use super::uri::Uri;

macro_rules! header_names {
    ($( $variant:ident => $canon:literal $(, $compact:literal)? ; )*) => {
        /// A header field name; unknown names are kept as received.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum HeaderName {
            $( $variant, )*
            Other(String),
        }

        impl HeaderName {
            /// Looks up a name case-insensitively, expanding compact forms.
            pub fn from_wire(name: &str) -> HeaderName {
                $(
                    if name.eq_ignore_ascii_case($canon) $(|| name.eq_ignore_ascii_case($compact))? {
                        return HeaderName::$variant;
                    }
                )*
                HeaderName::Other(name.to_string())
            }

            /// The canonical spelling used when serializing.
            pub fn as_str(&self) -> &str {
                match self {
                    $( HeaderName::$variant => $canon, )*
                    HeaderName::Other(s) => s,
                }
            }
        }
    };
}

header_names! {
    Via => "Via", "v";
    From => "From", "f";
    To => "To", "t";
    CallId => "Call-ID", "i";
    CSeq => "CSeq";
    Contact => "Contact", "m";
    MaxForwards => "Max-Forwards";
    ContentLength => "Content-Length", "l";
    ContentType => "Content-Type", "c";
    ContentEncoding => "Content-Encoding", "e";
    Route => "Route";
    RecordRoute => "Record-Route";
    Expires => "Expires";
    Allow => "Allow";
    Supported => "Supported", "k";
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Unsupported => "Unsupported";
    Accept => "Accept";
    AcceptEncoding => "Accept-Encoding";
    AcceptLanguage => "Accept-Language";
    Authorization => "Authorization";
    ProxyAuthorization => "Proxy-Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
    UserAgent => "User-Agent";
    Server => "Server";
    Date => "Date";
    Subject => "Subject", "s";
    RetryAfter => "Retry-After";
    Warning => "Warning";
    PAssertedIdentity => "P-Asserted-Identity";
    RemotePartyId => "Remote-Party-ID";
    Privacy => "Privacy";
    Event => "Event", "o";
    AllowEvents => "Allow-Events", "u";
    ReferTo => "Refer-To", "r";
    ReferredBy => "Referred-By", "b";
    SessionExpires => "Session-Expires", "x";
    MinSe => "Min-SE";
    Reason => "Reason";
}

impl HeaderName {
    /// List headers whose whole value may be empty (RFC 3261 §25.1: `Allow`, `Supported` and
    /// the `Accept` family are `HCOLON [ … ]`); an empty `Accept` means nothing is acceptable.
    pub fn may_be_empty(&self) -> bool {
        matches!(
            self,
            HeaderName::Allow
                | HeaderName::Supported
                | HeaderName::Accept
                | HeaderName::AcceptEncoding
                | HeaderName::AcceptLanguage
        )
    }

    /// Headers whose value is a comma-separated list (RFC 3261 §7.3.1), split on arrival.
    /// Authorization-style headers and Date contain commas that are not separators.
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Allow
                | HeaderName::Supported
                | HeaderName::Require
                | HeaderName::ProxyRequire
                | HeaderName::Unsupported
                | HeaderName::Accept
                | HeaderName::AcceptEncoding
                | HeaderName::AcceptLanguage
                | HeaderName::ContentEncoding
                | HeaderName::AllowEvents
                | HeaderName::PAssertedIdentity
                | HeaderName::Warning
        )
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The headers of a message in arrival order, one entry per list element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(HeaderName, String)>,
}

impl Headers {
    pub fn new() -> Self {
        Headers::default()
    }

    /// Appends a value (not split; the caller gives one element).
    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) {
        self.entries.push((name, value.into()));
    }

    /// Replaces every value of `name` with one value.
    pub fn set(&mut self, name: HeaderName, value: impl Into<String>) {
        self.remove(&name);
        self.entries.push((name, value.into()));
    }

    pub fn remove(&mut self, name: &HeaderName) {
        self.entries.retain(|(n, _)| n != name);
    }

    /// Replaces the first value of `name`, keeping its position.
    pub fn replace_first(&mut self, name: &HeaderName, value: String) {
        if let Some(slot) = self.entries.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value;
        }
    }

    pub fn get(&self, name: &HeaderName) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn count(&self, name: &HeaderName) -> usize {
        self.entries.iter().filter(|(n, _)| n == name).count()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &str)> {
        self.entries.iter().map(|(n, v)| (n, v.as_str()))
    }

    /// Looks a header up by any spelling of its name.
    pub fn get_named(&self, name: &str) -> Option<&str> {
        match HeaderName::from_wire(name) {
            HeaderName::Other(s) => self
                .entries
                .iter()
                .find(|(n, _)| matches!(n, HeaderName::Other(o) if o.eq_ignore_ascii_case(&s)))
                .map(|(_, v)| v.as_str()),
            known => self.get(&known),
        }
    }
}

/// `token` characters of RFC 3261 §25.1.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Splits a list header value at commas that are outside quoted strings and `<…>`.
/// An empty element (`a,,b`) is an error (RFC 4475 §3.1.2.1).
pub(crate) fn split_list<'a>(
    value: &'a str,
    header: &'static str,
) -> Result<Vec<&'a str>, ParseError> {
    let mut out = Vec::new();
    let b = value.as_bytes();
    let (mut start, mut i) = (0, 0);
    let (mut in_quote, mut in_angle) = (false, false);
    while i < b.len() {
        match b[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            b'<' if !in_quote => in_angle = true,
            b'>' if !in_quote => in_angle = false,
            b',' if !in_quote && !in_angle => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&value[start..]);
    let out: Vec<&str> = out.into_iter().map(str::trim).collect();
    if out.iter().any(|s| s.is_empty()) {
        return Err(ParseError::BadHeader {
            header,
            why: "empty list element",
        });
    }
    Ok(out)
}

/// A cursor over a header value for the small grammars below.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    /// A quoted-string starting at the cursor; returns the raw text between the quotes.
    fn quoted(&mut self, header: &'static str) -> Result<&'a str, ParseError> {
        if !self.eat(b'"') {
            return Err(ParseError::BadHeader {
                header,
                why: "expected quoted string",
            });
        }
        let start = self.pos;
        let b = self.s.as_bytes();
        while self.pos < b.len() {
            match b[self.pos] {
                b'\\' => self.pos += 2,
                b'"' => {
                    let raw = &self.s[start..self.pos];
                    self.pos += 1;
                    return Ok(raw);
                }
                _ => self.pos += 1,
            }
        }
        Err(ParseError::BadHeader {
            header,
            why: "unterminated quoted string",
        })
    }
}

/// Generic `*( SEMI generic-param )` (RFC 3261 §25.1) with LWS around `;` and `=`.
pub(crate) type Params = Vec<(String, Option<String>)>;

fn parse_params(c: &mut Cursor<'_>, header: &'static str) -> Result<Params, ParseError> {
    let mut params = Vec::new();
    loop {
        c.skip_ws();
        if c.at_end() {
            return Ok(params);
        }
        if !c.eat(b';') {
            return Err(ParseError::BadHeader {
                header,
                why: "garbage after value",
            });
        }
        c.skip_ws();
        let name = c.take_while(is_token_char);
        if name.is_empty() {
            return Err(ParseError::BadHeader {
                header,
                why: "empty parameter",
            });
        }
        c.skip_ws();
        let value = if c.eat(b'=') {
            c.skip_ws();
            if c.peek() == Some(b'"') {
                let q = c.quoted(header)?;
                Some(format!("\"{q}\""))
            } else if c.peek() == Some(b'[') {
                Some(
                    c.take_while(|b| b != b';' && b != b' ' && b != b'\t')
                        .to_string(),
                )
            } else {
                let v = c.take_while(|b| is_token_char(b) || b == b':');
                if v.is_empty() {
                    return Err(ParseError::BadHeader {
                        header,
                        why: "empty parameter value",
                    });
                }
                Some(v.to_string())
            }
        } else {
            None
        };
        params.push((name.to_string(), value));
    }
}

fn find_param<'a>(params: &'a Params, name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &Params) -> fmt::Result {
    for (k, v) in params {
        match v {
            Some(v) => write!(f, ";{k}={v}")?,
            None => write!(f, ";{k}")?,
        }
    }
    Ok(())
}

/// `name-addr / addr-spec` with header parameters: From, To, Contact, Route, PAI
/// (RFC 3261 §20.10, §20.20, §20.39).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name without quotes and with quoted-pairs resolved.
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> Self {
        NameAddr {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    pub fn parse(value: &str, header: &'static str) -> Result<NameAddr, ParseError> {
        let mut c = Cursor::new(value.trim());
        let display;
        if c.peek() == Some(b'"') {
            let q = c.quoted(header)?;
            display = Some(unquote(q));
            c.skip_ws();
            if c.peek() != Some(b'<') {
                return Err(ParseError::BadHeader {
                    header,
                    why: "display name without <addr-spec>",
                });
            }
        } else if let Some(lt) = c.rest().find('<') {
            // Unquoted display name: tokens separated by LWS (RFC 4475 §3.1.2.15).
            let dn = c.rest()[..lt].trim();
            if !dn
                .split([' ', '\t'])
                .filter(|t| !t.is_empty())
                .all(is_token)
            {
                return Err(ParseError::BadHeader {
                    header,
                    why: "display name is not a token list",
                });
            }
            display = if dn.is_empty() {
                None
            } else {
                Some(dn.to_string())
            };
            c.pos += lt;
        } else {
            display = None;
        }
        let uri = if c.eat(b'<') {
            let inner = c.take_while(|b| b != b'>');
            if !c.eat(b'>') {
                return Err(ParseError::BadHeader {
                    header,
                    why: "unterminated <",
                });
            }
            Uri::parse(inner)?
        } else {
            // addr-spec without angle brackets: ends at ';' or whitespace and may not carry
            // URI headers (RFC 3261 §20.10, RFC 4475 §3.1.2.13).
            let spec = c.take_while(|b| b != b';' && b != b' ' && b != b'\t');
            if spec.contains('?') || spec.contains(',') {
                return Err(ParseError::BadHeader {
                    header,
                    why: "addr-spec with '?' or ',' must be enclosed in <>",
                });
            }
            Uri::parse(spec)?
        };
        let params = parse_params(&mut c, header)?;
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    pub fn remove_param(&mut self, name: &str) {
        self.params.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        self.params.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.params
            .push((name.to_string(), value.map(str::to_string)));
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "\"{}\" ", d.replace('\\', "\\\\").replace('"', "\\\""))?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

/// Resolves quoted-pairs in the raw text of a quoted-string.
pub(crate) fn unquote(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// One Via entry (RFC 3261 §20.42), with RFC 3581 `rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport in upper case: UDP, TCP, TLS, SCTP or anything else.
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

/// The RFC 3261 branch prefix that marks a transaction-unique branch (§8.1.1.7).
pub(crate) const MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    pub fn parse(value: &str) -> Result<Via, ParseError> {
        const H: &str = "Via";
        let mut c = Cursor::new(value.trim());
        let proto = c.take_while(is_token_char);
        c.skip_ws();
        let ok1 = c.eat(b'/');
        c.skip_ws();
        let version = c.take_while(is_token_char);
        c.skip_ws();
        let ok2 = c.eat(b'/');
        c.skip_ws();
        let transport = c.take_while(is_token_char);
        if !proto.eq_ignore_ascii_case("SIP") || !ok1 || !ok2 || transport.is_empty() {
            return Err(ParseError::BadHeader {
                header: H,
                why: "bad sent-protocol",
            });
        }
        if version != "2.0" {
            return Err(ParseError::BadVersion(format!("{proto}/{version}")));
        }
        c.skip_ws();
        let host = if c.peek() == Some(b'[') {
            let h = c.take_while(|b| b != b']');
            if !c.eat(b']') {
                return Err(ParseError::BadHeader {
                    header: H,
                    why: "unterminated IPv6 reference",
                });
            }
            format!("{h}]")
        } else {
            c.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
                .to_string()
        };
        if host.is_empty() {
            return Err(ParseError::BadHeader {
                header: H,
                why: "missing sent-by host",
            });
        }
        c.skip_ws();
        let port = if c.eat(b':') {
            c.skip_ws();
            let p = c.take_while(|b| b.is_ascii_digit());
            Some(p.parse::<u16>().map_err(|_| ParseError::BadHeader {
                header: H,
                why: "bad sent-by port",
            })?)
        } else {
            None
        };
        let params = parse_params(&mut c, H)?;
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host: host.to_ascii_lowercase(),
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        find_param(&self.params, "branch").flatten()
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// Sets `received` and fills an empty `rport` with the packet's source (RFC 3581 §4).
    pub fn stamp_source(&mut self, ip: std::net::IpAddr, port: u16) {
        let ip_s = ip.to_string();
        if self.host != ip_s || self.param("rport").is_some() {
            self.params
                .retain(|(k, _)| !k.eq_ignore_ascii_case("received"));
            self.params.push(("received".into(), Some(ip_s)));
        }
        if let Some(slot) = self
            .params
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case("rport"))
        {
            slot.1 = Some(port.to_string());
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write_params(f, &self.params)
    }
}

/// CSeq (RFC 3261 §20.16): the sequence number must be below 2^31 (§8.1.1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: super::message::Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, ParseError> {
        const H: &str = "CSeq";
        let mut parts = value.split([' ', '\t']).filter(|s| !s.is_empty());
        let (Some(n), Some(m), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ParseError::BadHeader {
                header: H,
                why: "expected number and method",
            });
        };
        if !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadHeader {
                header: H,
                why: "sequence number is not a number",
            });
        }
        let seq =
            n.parse::<u32>()
                .ok()
                .filter(|s| *s < (1 << 31))
                .ok_or(ParseError::BadHeader {
                    header: H,
                    why: "sequence number 2^31 or larger",
                })?;
        if !is_token(m) {
            return Err(ParseError::BadHeader {
                header: H,
                why: "method is not a token",
            });
        }
        Ok(CSeq {
            seq,
            method: super::message::Method::from_token(m),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Parses a decimal scalar header such as Max-Forwards or Expires with an upper bound.
pub(crate) fn parse_scalar(value: &str, header: &'static str, max: u64) -> Result<u64, ParseError> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadHeader {
            header,
            why: "not a decimal number",
        });
    }
    v.parse::<u64>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or(ParseError::BadHeader {
            header,
            why: "value too large",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case() {
        assert_eq!(HeaderName::from_wire("v"), HeaderName::Via);
        assert_eq!(
            HeaderName::from_wire("MaX-fOrWaRdS"),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::from_wire("L"), HeaderName::ContentLength);
        assert!(matches!(
            HeaderName::from_wire("C%6Fntact"),
            HeaderName::Other(_)
        ));
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"A \\\"B\\\"\" <sip:a@b>;tag=1", "From").unwrap();
        assert_eq!(n.display.as_deref(), Some("A \"B\""));
        assert_eq!(n.tag(), Some("1"));
        let n = NameAddr::parse("sip:a@b ;  tag = x", "To").unwrap();
        assert_eq!(n.tag(), Some("x"));
        assert!(NameAddr::parse("Bell, Al <sip:a@b>", "From").is_err());
        assert!(NameAddr::parse("< sip:a@b >", "To").is_err());
        assert!(NameAddr::parse("\"open <sip:a@b>", "To").is_err());
        assert!(NameAddr::parse("sip:a@b?x=y", "Contact").is_err());
        assert!(NameAddr::parse("<sip:a@b>;;", "Contact").is_err());
    }

    #[test]
    fn via_with_lws() {
        let v = Via::parse("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v = Via::parse("SIP/2.0/UDP [::1]:5062;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(v.port, Some(5062));
        assert_eq!(v.param("rport"), Some(None));
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;").is_err());
    }

    #[test]
    fn rport_stamping() {
        let mut v = Via::parse("SIP/2.0/UDP host;rport;branch=z9hG4bKa").unwrap();
        v.stamp_source("127.0.0.1".parse().unwrap(), 5999);
        assert_eq!(v.param("rport"), Some(Some("5999")));
        assert_eq!(v.param("received"), Some(Some("127.0.0.1")));
    }

    #[test]
    fn list_split_respects_quotes() {
        let l = split_list("\"a,b\" <sip:x>, <sip:y,z>", "Contact").unwrap();
        assert_eq!(l, vec!["\"a,b\" <sip:x>", "<sip:y,z>"]);
        assert!(split_list("a,,b", "Via").is_err());
    }

    #[test]
    fn cseq_bounds() {
        assert_eq!(CSeq::parse("0009 INVITE").unwrap().seq, 9);
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("9292394834772304023312 OPTIONS").is_err());
        assert!(CSeq::parse("1").is_err());
    }
}
