//! SIP and other URIs (RFC 3261 §19.1, §25.1 `SIP-URI`, `SIPS-URI`, `absoluteURI`).
//!
//! Values are kept as received (escaped) so that a URI can be echoed byte-exact, which a UA must
//! do for To/From/Contact; comparisons go through [`unescape`] as RFC 3261 §19.1.4 requires.

use std::fmt;

use super::error::ParseError;

/// A URI as found in a Request-URI or a name-addr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// Lower-cased scheme: `sip`, `sips`, `tel`, or anything else (kept for echoing; see
    /// [`Uri::is_sip`]).
    pub scheme: String,
    /// Escaped user part (may contain `;` per RFC 4475 §3.1.1.9), `None` without `@`.
    pub user: Option<String>,
    /// Escaped password after `user:`.
    pub password: Option<String>,
    /// Host (lower-cased; IPv6 references keep their brackets).
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters in order, names as received.
    pub params: Vec<(String, Option<String>)>,
    /// Escaped `?name=value` headers.
    pub headers: Vec<(String, String)>,
    /// For non-SIP schemes, the whole text after `scheme:`; empty for SIP URIs.
    pub opaque: String,
}

impl Uri {
    /// Parses a URI. SIP/SIPS URIs are parsed into parts; other schemes are kept opaque
    /// (RFC 4475 §3.3.4: unknown schemes in header fields must still parse).
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        if s.is_empty() {
            return Err(ParseError::BadUri("empty"));
        }
        if s.bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>' || b == b'"')
        {
            return Err(ParseError::BadUri(
                "whitespace, control or delimiter character",
            ));
        }
        let colon = s.find(':').ok_or(ParseError::BadUri("no scheme"))?;
        let scheme = &s[..colon];
        if scheme.is_empty()
            || !scheme.as_bytes()[0].is_ascii_alphabetic()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        {
            return Err(ParseError::BadUri("bad scheme"));
        }
        let scheme = scheme.to_ascii_lowercase();
        let rest = &s[colon + 1..];
        if scheme != "sip" && scheme != "sips" {
            if rest.is_empty() {
                return Err(ParseError::BadUri("empty opaque part"));
            }
            return Ok(Uri {
                scheme,
                user: None,
                password: None,
                host: String::new(),
                port: None,
                params: Vec::new(),
                headers: Vec::new(),
                opaque: rest.to_string(),
            });
        }
        let (userinfo, hostpart) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some("") => return Err(ParseError::BadUri("empty user")),
            Some(ui) => {
                // The password follows the first ':' of the userinfo.
                match ui.find(':') {
                    Some(c) => (Some(ui[..c].to_string()), Some(ui[c + 1..].to_string())),
                    None => (Some(ui.to_string()), None),
                }
            }
        };
        let (hostport_params, headers_part) = match hostpart.find('?') {
            Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
            None => (hostpart, None),
        };
        let mut parts = hostport_params.split(';');
        let hostport = parts.next().unwrap_or("");
        let (host, port) = split_hostport(hostport)?;
        let mut params = Vec::new();
        for p in parts {
            if p.is_empty() {
                return Err(ParseError::BadUri("empty parameter"));
            }
            match p.find('=') {
                Some(eq) => params.push((p[..eq].to_string(), Some(p[eq + 1..].to_string()))),
                None => params.push((p.to_string(), None)),
            }
        }
        let mut headers = Vec::new();
        if let Some(h) = headers_part {
            for kv in h.split('&') {
                let (k, v) = kv.split_once('=').ok_or(ParseError::BadUri("bad header"))?;
                headers.push((k.to_string(), v.to_string()));
            }
        }
        Ok(Uri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
            opaque: String::new(),
        })
    }

    /// Builds a plain `sip:user@host:port` URI.
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            scheme: "sip".into(),
            user: user.map(str::to_string),
            password: None,
            host: host.to_ascii_lowercase(),
            port,
            params: Vec::new(),
            headers: Vec::new(),
            opaque: String::new(),
        }
    }

    /// True for `sip:` and `sips:` URIs, the only schemes screenpop routes (others get 416).
    pub fn is_sip(&self) -> bool {
        self.scheme == "sip" || self.scheme == "sips"
    }

    /// The value of a URI parameter, compared case-insensitively by name.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The user part with escapes decoded (lossy for invalid UTF-8).
    pub fn user_unescaped(&self) -> Option<String> {
        self.user
            .as_deref()
            .map(|u| String::from_utf8_lossy(&unescape(u)).into_owned())
    }

    /// Host and port with the SIP default filled in (5060, or 5061 for `sips`).
    pub fn host_port(&self) -> (String, u16) {
        let default = if self.scheme == "sips" { 5061 } else { 5060 };
        (self.host.clone(), self.port.unwrap_or(default))
    }
}

fn split_hostport(s: &str) -> Result<(String, Option<u16>), ParseError> {
    if s.is_empty() {
        return Err(ParseError::BadUri("empty host"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or(ParseError::BadUri("unterminated IPv6 reference"))?;
        let host = &s[..end + 2];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(ParseError::BadUri("garbage after IPv6 reference")),
        };
        (host, port)
    } else {
        match s.rfind(':') {
            Some(c) => (&s[..c], Some(&s[c + 1..])),
            None => (s, None),
        }
    };
    if host.is_empty()
        || !host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':' | b'_')
        })
    {
        return Err(ParseError::BadUri("bad host"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| ParseError::BadUri("bad port"))?,
        ),
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// Decodes `%HH` escapes; a `%` not followed by two hex digits is kept literally
/// (RFC 4475 §3.1.1.5).
pub(crate) fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if !self.is_sip() {
            return f.write_str(&self.opaque);
        }
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        for (i, (k, v)) in self.headers.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sip_uri_parts() {
        let u = Uri::parse("sip:alice:pw@Example.COM:5070;transport=tcp;lr?subject=x").unwrap();
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("TRANSPORT"), Some(Some("tcp")));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.headers, vec![("subject".into(), "x".into())]);
    }

    #[test]
    fn ipv6_and_opaque() {
        let u = Uri::parse("sip:[::1]:5060").unwrap();
        assert_eq!(u.host, "[::1]");
        assert_eq!(u.port, Some(5060));
        let t = Uri::parse("tel:+15551234").unwrap();
        assert!(!t.is_sip());
        assert_eq!(t.to_string(), "tel:+15551234");
    }

    #[test]
    fn rejects_bad() {
        for s in [
            "",
            "sip:",
            "sip:user@",
            "sip:a b",
            "<sip:a>",
            "sip:h:99999",
            "1x:y",
        ] {
            assert!(Uri::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn unescape_keeps_stray_percent() {
        assert_eq!(unescape("%75se%72"), b"user");
        assert_eq!(unescape("%Z%45"), b"%ZE");
        assert_eq!(unescape("a%4"), b"a%4");
        assert_eq!(unescape("%00"), b"\0");
    }
}
