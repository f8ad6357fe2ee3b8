//! SIP message framing, parsing and serialization (RFC 3261 §7, §18.3, §25).
//!
//! Why our own codec rather than rsip 0.4: rsip as published drops compact header names into
//! unknown headers, fails on folded lines and keeps only the first of comma-joined Vias — all of
//! which appear in RFC 4475 and in real trunks. This codec unfolds lines, expands compact names,
//! splits list headers into one entry per value, and checks the scalar and address headers on
//! arrival so that a malformed message is refused with a typed [`ParseError`] before any
//! transaction sees it (RFC 4475 §3.1.2).

use std::fmt;

use super::error::ParseError;
use super::headers::{
    is_token, parse_scalar, split_list, CSeq, HeaderName, Headers, NameAddr, Via,
};
use super::uri::Uri;

/// Largest message accepted on any transport (UDP datagrams are smaller still).
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;
/// Largest header section accepted.
pub(crate) const MAX_HEADERS: usize = 16 * 1024;

/// A SIP method; extension methods keep their token (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Extension(String),
}

impl Method {
    /// Methods are case-sensitive (RFC 3261 §7.1): `invite` is an extension method.
    pub fn from_token(t: &str) -> Method {
        match t {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// Parses one message from a datagram (RFC 3261 §18.3): octets after Content-Length are
    /// ignored, a body shorter than Content-Length is an error.
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        parse_inner(buf, false).map(|(m, _)| m)
    }

    /// Parses the first message of a stream buffer, returning it and the bytes it used, or
    /// `Err(Incomplete)` when more bytes are needed. Content-Length is mandatory on streams.
    pub fn parse_stream(buf: &[u8]) -> Result<(Message, usize), ParseError> {
        parse_inner(buf, true)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_to(&mut out);
        out
    }

    /// Serializes with a Content-Length computed from the body.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let (headers, body) = match self {
            Message::Request(r) => {
                let _ = write!(out, "{} {} SIP/2.0\r\n", r.method, r.uri);
                (&r.headers, &r.body)
            }
            Message::Response(r) => {
                let _ = write!(out, "SIP/2.0 {} {}\r\n", r.status, r.reason);
                (&r.headers, &r.body)
            }
        };
        for (name, value) in headers.iter() {
            if *name == HeaderName::ContentLength {
                continue;
            }
            let _ = write!(out, "{name}: {value}\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
        out.extend_from_slice(body);
    }
}

impl From<Request> for Message {
    fn from(r: Request) -> Self {
        Message::Request(r)
    }
}

impl From<Response> for Message {
    fn from(r: Response) -> Self {
        Message::Response(r)
    }
}

/// Finds the end of the header section: returns (header bytes length, body start).
fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, i + 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

fn parse_inner(buf: &[u8], stream: bool) -> Result<(Message, usize), ParseError> {
    // Stream keep-alives and stray CRLFs before a message are skipped (RFC 5626 §3.5.1,
    // RFC 3261 §7.5).
    let lead = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let buf = &buf[lead..];
    if buf.is_empty() {
        return Err(ParseError::Incomplete);
    }
    // A datagram that ends right after a header line lacks only the blank line; its end is
    // the end of the headers (being lenient here costs nothing and answers the peer).
    let found = find_header_end(buf).or_else(|| {
        (!stream && buf.ends_with(b"\n")).then(|| {
            let n = buf.len() - if buf.ends_with(b"\r\n") { 2 } else { 1 };
            (n, buf.len())
        })
    });
    let Some((hdr_len, body_start)) = found else {
        if buf.len() > MAX_HEADERS {
            return Err(ParseError::HeadersTooLarge(MAX_HEADERS));
        }
        return Err(if stream {
            ParseError::Incomplete
        } else {
            ParseError::BadHeaderLine("no blank line after headers")
        });
    };
    if hdr_len > MAX_HEADERS {
        return Err(ParseError::HeadersTooLarge(MAX_HEADERS));
    }
    let head = std::str::from_utf8(&buf[..hdr_len])
        .map_err(|_| ParseError::BadHeaderLine("header section is not UTF-8"))?;
    let mut lines = unfold(head)?.into_iter();
    let start = lines.next().ok_or(ParseError::BadStartLine("empty"))?;

    let start = parse_start_line(&start)?;

    let mut headers = Headers::new();
    for line in lines {
        let colon = line
            .find(':')
            .ok_or(ParseError::BadHeaderLine("no colon"))?;
        let name = line[..colon].trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(ParseError::BadHeaderLine("header name is not a token"));
        }
        let value = line[colon + 1..].trim_matches([' ', '\t']);
        let name = HeaderName::from_wire(name);
        if value.is_empty() && name.may_be_empty() {
            // `Supported:` with nothing after it is valid (baresip 1.0 sends it).
            headers.push(name, value);
        } else if name.is_list() && !(name == HeaderName::Contact && value == "*") {
            let static_name = static_name(&name);
            for v in split_list(value, static_name)? {
                headers.push(name.clone(), v);
            }
        } else {
            headers.push(name, value);
        }
    }

    // Content-Length: digits only, bounded (RFC 4475 §3.1.2.3/4); the first value frames the
    // message, duplicates are refused later by `check_request` (RFC 4475 §3.3.9).
    let content_length = match headers.get(&HeaderName::ContentLength) {
        Some(v) => {
            let v = v.trim();
            if v.starts_with('-') {
                return Err(ParseError::BadContentLength("is negative"));
            }
            Some(
                parse_scalar(v, "Content-Length", MAX_MESSAGE as u64).map_err(|_| {
                    ParseError::BadContentLength("is not a number within the size limit")
                })? as usize,
            )
        }
        None if stream => return Err(ParseError::MissingContentLength),
        None => None,
    };
    let available = buf.len() - body_start;
    let body_len = match content_length {
        Some(n) if n > available => {
            if stream {
                if body_start + n > MAX_MESSAGE {
                    return Err(ParseError::TooLarge(MAX_MESSAGE));
                }
                return Err(ParseError::Incomplete);
            }
            return Err(ParseError::TruncatedBody);
        }
        Some(n) => n,
        None => available,
    };
    if body_start + body_len > MAX_MESSAGE {
        return Err(ParseError::TooLarge(MAX_MESSAGE));
    }
    let body = buf[body_start..body_start + body_len].to_vec();
    check_headers(&headers)?;
    let used = lead + body_start + body_len;

    let msg = match start {
        StartLine::Request(method, uri) => {
            if let Some(cseq) = headers.get(&HeaderName::CSeq) {
                let cseq = CSeq::parse(cseq)?;
                if cseq.method != method {
                    return Err(ParseError::CSeqMismatch {
                        method: method.to_string(),
                        cseq: cseq.method.to_string(),
                    });
                }
            }
            Message::Request(Request {
                method,
                uri,
                headers,
                body,
            })
        }
        StartLine::Response(status, reason) => Message::Response(Response {
            status,
            reason,
            headers,
            body,
        }),
    };
    Ok((msg, used))
}

fn static_name(name: &HeaderName) -> &'static str {
    match name {
        HeaderName::Via => "Via",
        HeaderName::Contact => "Contact",
        HeaderName::Route => "Route",
        HeaderName::RecordRoute => "Record-Route",
        HeaderName::PAssertedIdentity => "P-Asserted-Identity",
        _ => "list header",
    }
}

/// Joins folded lines (RFC 3261 §7.3.1): a line starting with SP or HT continues the previous
/// one, and the CRLF plus leading whitespace become one SP.
fn unfold(head: &str) -> Result<Vec<String>, ParseError> {
    let mut lines: Vec<String> = Vec::with_capacity(16);
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.contains('\r') {
            return Err(ParseError::BadHeaderLine("bare CR in header section"));
        }
        if line.starts_with([' ', '\t']) {
            if lines.len() < 2 {
                return Err(ParseError::BadStartLine("folded or indented start line"));
            }
            let prev = lines.last_mut().ok_or(ParseError::BadStartLine("empty"))?;
            prev.push(' ');
            prev.push_str(line.trim_start_matches([' ', '\t']));
        } else {
            lines.push(line.to_string());
        }
    }
    Ok(lines)
}

enum StartLine {
    Request(Method, Uri),
    Response(u16, String),
}

/// `SIP/` at the start, compared on bytes: slicing a `str` at 4 could split a UTF-8 character.
pub(crate) fn starts_with_sip(s: &str) -> bool {
    s.as_bytes()
        .get(..4)
        .is_some_and(|b| b.eq_ignore_ascii_case(b"SIP/"))
}

fn check_version(v: &str) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    let looks_like = v.len() > 4
        && starts_with_sip(v)
        && v.bytes().skip(4).all(|b| b.is_ascii_digit() || b == b'.');
    if looks_like {
        Err(ParseError::BadVersion(v.to_string()))
    } else {
        Err(ParseError::BadStartLine("bad SIP-Version"))
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if starts_with_sip(line) {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        check_version(version)?;
        let code = parts
            .next()
            .ok_or(ParseError::BadStartLine("no status code"))?;
        let reason = parts.next().unwrap_or("");
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadStatusCode);
        }
        let status: u16 = code.parse().map_err(|_| ParseError::BadStatusCode)?;
        if !(100..=699).contains(&status) {
            return Err(ParseError::BadStatusCode);
        }
        return Ok(StartLine::Response(status, reason.to_string()));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly single spaces
    // (RFC 4475 §3.1.2.8–10).
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(ParseError::BadStartLine(
            "request line must be Method SP Request-URI SP SIP-Version",
        ));
    }
    if !is_token(parts[0]) {
        return Err(ParseError::BadStartLine("method is not a token"));
    }
    check_version(parts[2])?;
    let uri = Uri::parse(parts[1])?;
    if uri.is_sip() && !uri.headers.is_empty() {
        // RFC 3261 §19.1.5: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
        return Err(ParseError::BadUri("headers in Request-URI"));
    }
    Ok(StartLine::Request(Method::from_token(parts[0]), uri))
}

/// Checks the headers every element relies on, so later code can trust them.
fn check_headers(h: &Headers) -> Result<(), ParseError> {
    for v in h.get_all(&HeaderName::Via) {
        Via::parse(v)?;
    }
    if let Some(v) = h.get(&HeaderName::CSeq) {
        CSeq::parse(v)?;
    }
    for (name, label) in [(HeaderName::From, "From"), (HeaderName::To, "To")] {
        for v in h.get_all(&name) {
            NameAddr::parse(v, label)?;
        }
    }
    for v in h.get_all(&HeaderName::Contact) {
        if v != "*" {
            NameAddr::parse(v, "Contact")?;
        }
    }
    for v in h.get_all(&HeaderName::MaxForwards) {
        parse_scalar(v, "Max-Forwards", 255)?;
    }
    for v in h.get_all(&HeaderName::Expires) {
        parse_scalar(v, "Expires", u32::MAX as u64)?;
    }
    for v in h.get_all(&HeaderName::RetryAfter) {
        let n = v.split([';', '(', ' ']).next().unwrap_or("");
        parse_scalar(n, "Retry-After", u32::MAX as u64)?;
    }
    for v in h.get_all(&HeaderName::Warning) {
        let code = v.split(' ').next().unwrap_or("");
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadHeader {
                header: "Warning",
                why: "warn-code must be three digits",
            });
        }
    }
    if let Some(d) = h.get(&HeaderName::Date) {
        // SIP-date is rfc1123-date, always in GMT (RFC 3261 §20.17, RFC 4475 §3.1.2.12).
        if !d.trim_end().ends_with(" GMT") {
            return Err(ParseError::BadHeader {
                header: "Date",
                why: "time zone must be GMT",
            });
        }
    }
    if let Some(c) = h.get(&HeaderName::CallId) {
        if c.is_empty() || c.contains([' ', '\t']) {
            return Err(ParseError::BadHeader {
                header: "Call-ID",
                why: "empty or contains whitespace",
            });
        }
    }
    Ok(())
}

/// Why a well-formed request is still refused by a UAS, with the status to send
/// (RFC 3261 §8.2; RFC 4475 §3.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestProblem {
    #[error("missing mandatory header {0}")]
    Missing(&'static str),
    #[error("more than one {0} header")]
    Duplicate(&'static str),
}

/// RFC 3261 §8.1.1: To, From, CSeq, Call-ID, Via (and Max-Forwards, tolerated when missing for
/// RFC 2543 peers) must be present once.
pub(crate) fn check_request(req: &Request) -> Result<(), RequestProblem> {
    let h = &req.headers;
    for (name, label) in [
        (HeaderName::To, "To"),
        (HeaderName::From, "From"),
        (HeaderName::CSeq, "CSeq"),
        (HeaderName::CallId, "Call-ID"),
        (HeaderName::Via, "Via"),
    ] {
        if h.count(&name) == 0 {
            return Err(RequestProblem::Missing(label));
        }
    }
    for (name, label) in [
        (HeaderName::To, "To"),
        (HeaderName::From, "From"),
        (HeaderName::CSeq, "CSeq"),
        (HeaderName::CallId, "Call-ID"),
        (HeaderName::MaxForwards, "Max-Forwards"),
        (HeaderName::ContentLength, "Content-Length"),
        (HeaderName::ContentType, "Content-Type"),
    ] {
        if h.count(&name) > 1 {
            return Err(RequestProblem::Duplicate(label));
        }
    }
    Ok(())
}

impl Request {
    pub fn new(method: Method, uri: Uri) -> Self {
        Request {
            method,
            uri,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Records where the request really came from in its top Via: `received` when the
    /// sent-by differs and the `rport` value when asked for (RFC 3261 §18.2.1, RFC 3581 §4).
    /// Responses copy the Via, so the peer learns its public address.
    pub fn stamp_source(&mut self, source: std::net::SocketAddr) {
        let Some(mut via) = self.top_via() else {
            return;
        };
        via.stamp_source(source.ip(), source.port());
        self.headers
            .replace_first(&HeaderName::Via, via.to_string());
    }

    /// Builds a response per RFC 3261 §8.2.6.2: Via, From, To, Call-ID and CSeq copied; a To
    /// tag is added when `to_tag` is given and the request had none.
    pub fn response(&self, status: u16, to_tag: Option<&str>) -> Response {
        let mut headers = Headers::new();
        for v in self.headers.get_all(&HeaderName::Via) {
            headers.push(HeaderName::Via, v);
        }
        for name in [
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            if let Some(v) = self.headers.get(&name) {
                let mut v = v.to_string();
                if name == HeaderName::To {
                    if let (Some(tag), Ok(na)) = (to_tag, NameAddr::parse(&v, "To")) {
                        if na.tag().is_none() {
                            v.push_str(";tag=");
                            v.push_str(tag);
                        }
                    }
                }
                headers.push(name, v);
            }
        }
        Response {
            status,
            reason: reason_phrase(status).to_string(),
            headers,
            body: Vec::new(),
        }
    }
}

impl Response {
    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.headers.set(HeaderName::ContentType, content_type);
        self.body = body;
        self
    }
}

/// Typed views of the headers every request and response carries, parsed on demand.
macro_rules! header_accessors {
    ($t:ty) => {
        impl $t {
            pub fn top_via(&self) -> Option<Via> {
                self.headers
                    .get(&HeaderName::Via)
                    .and_then(|v| Via::parse(v).ok())
            }
            pub fn cseq(&self) -> Option<CSeq> {
                self.headers
                    .get(&HeaderName::CSeq)
                    .and_then(|v| CSeq::parse(v).ok())
            }
            pub fn call_id(&self) -> Option<&str> {
                self.headers.get(&HeaderName::CallId)
            }
            pub fn from(&self) -> Option<NameAddr> {
                name_addr_of(&self.headers, HeaderName::From)
            }
            pub fn to(&self) -> Option<NameAddr> {
                name_addr_of(&self.headers, HeaderName::To)
            }
            pub fn contact(&self) -> Option<NameAddr> {
                name_addr_of(&self.headers, HeaderName::Contact)
            }
        }
    };
}

header_accessors!(Request);
header_accessors!(Response);

fn name_addr_of(h: &Headers, name: HeaderName) -> Option<NameAddr> {
    let label = match name {
        HeaderName::From => "From",
        HeaderName::To => "To",
        _ => "Contact",
    };
    h.get(&name).and_then(|v| NameAddr::parse(v, label).ok())
}

/// Default reason phrases (RFC 3261 §21).
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds, SIP/2.0/TCP p2;branch=z9hG4bKx\r\n\
Max-Forwards: 70\r\n\
t: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Subject: folded\r\n  line\r\n\
Content-Length: 4\r\n\r\nbodyEXTRA";

    #[test]
    fn parses_request() {
        let Message::Request(r) = Message::parse(INVITE).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.headers.count(&HeaderName::Via), 2);
        assert_eq!(r.to().unwrap().display.as_deref(), Some("Bob"));
        assert_eq!(r.call_id(), Some("a84b4c76e66710@pc33.atlanta.example.com"));
        assert_eq!(r.headers.get(&HeaderName::Subject), Some("folded line"));
        assert_eq!(r.body, b"body");
        assert_eq!(r.cseq().unwrap().seq, 314159);
    }

    /// `Supported:`, `Allow:` and `Accept:` may be empty (RFC 3261 §25.1); `Require:` and
    /// `Via:` may not, nor may any list hold an empty element.
    #[test]
    fn empty_optional_lists_parse_and_empty_elements_do_not() {
        let with = |line: &str| {
            let raw = String::from_utf8_lossy(INVITE).replace("Subject: folded\r\n  line", line);
            Message::parse(raw.as_bytes())
        };
        for ok in ["Supported:", "Allow: ", "Accept:", "k:"] {
            let Ok(Message::Request(r)) = with(ok) else {
                panic!("{ok:?} must parse")
            };
            let name = HeaderName::from_wire(ok.trim_end_matches([':', ' ']));
            assert_eq!(r.headers.get(&name), Some(""), "{ok:?}");
        }
        for bad in ["Require:", "Supported: timer,,100rel", "Proxy-Require:"] {
            assert!(with(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn non_ascii_start_lines_are_errors_not_panics() {
        for raw in [
            &b"abc\xc3\xa9\r\n\r\n"[..],
            b"OPTIONS sip:a@b SIP\xc3\xa9\r\n\r\n",
            b"SIP\xc3\xa9 200 OK\r\n\r\n",
            b"\xc3\xa9\xc3\xa9\r\n\r\n",
        ] {
            assert!(Message::parse(raw).is_err());
            let _ = crate::transport::error_response(raw, 400);
        }
        assert!(crate::transport::error_response(b"abc\xff\r\n\r\n", 400).is_none());
    }

    #[test]
    fn stream_framing() {
        let mut two = INVITE[..INVITE.len() - 5].to_vec();
        two.extend_from_slice(&INVITE[..INVITE.len() - 5]);
        let (_, used) = Message::parse_stream(&two).unwrap();
        assert_eq!(used, INVITE.len() - 5);
        assert_eq!(
            Message::parse_stream(&two[..40]).unwrap_err(),
            ParseError::Incomplete
        );
        let (_, used2) = Message::parse_stream(&two[used..]).unwrap();
        assert_eq!(used2, used);
    }

    #[test]
    fn round_trip() {
        let m = Message::parse(INVITE).unwrap();
        let again = Message::parse(&m.to_bytes()).unwrap();
        assert_eq!(m, again);
    }

    #[test]
    fn response_copies_headers_and_tags() {
        let Message::Request(r) = Message::parse(INVITE).unwrap() else {
            panic!()
        };
        let resp = r.response(180, Some("abc"));
        assert_eq!(resp.to().unwrap().tag(), Some("abc"));
        assert_eq!(resp.headers.count(&HeaderName::Via), 2);
        let bytes = Message::Response(resp).to_bytes();
        assert!(bytes.starts_with(b"SIP/2.0 180 Ringing\r\n"));
    }
}
