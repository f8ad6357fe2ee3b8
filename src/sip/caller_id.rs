//! Caller-ID extraction (RFC 3325 P-Asserted-Identity, draft-ietf-sip-privacy Remote-Party-ID,
//! RFC 3261 From; RFC 3323 Privacy). Which headers count and in what order is the profile's
//! choice; `Privacy: id` (or `full`), `anonymous` users and RPID `privacy=full` mean the number is
//! withheld and must never be matched or stored as a customer's.

use super::headers::{HeaderName, NameAddr};
use super::message::Request;

/// What the network told us about the caller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallerId {
    /// The header value it came from, as received.
    pub raw: String,
    /// The number as presented (digits with an optional leading `+`), `None` when withheld or
    /// not a number.
    pub number: Option<String>,
    pub name: Option<String>,
    pub withheld: bool,
}

/// Reads the caller ID from `req` using `headers` in order of preference.
pub(crate) fn extract(req: &Request, headers: &[String]) -> CallerId {
    let privacy_id = req.headers.get(&HeaderName::Privacy).is_some_and(|p| {
        p.split([';', ',', ' '])
            .any(|t| t.eq_ignore_ascii_case("id") || t.eq_ignore_ascii_case("full"))
    });
    for h in headers {
        let Some(value) = req.headers.get_named(h) else {
            continue;
        };
        let label = if h.eq_ignore_ascii_case("From") {
            "From"
        } else {
            "Contact"
        };
        let Ok(na) = NameAddr::parse(value, label) else {
            continue;
        };
        let rpid_private = h.eq_ignore_ascii_case("Remote-Party-ID")
            && na
                .param("privacy")
                .flatten()
                .is_some_and(|p| p.eq_ignore_ascii_case("full") || p.eq_ignore_ascii_case("uri"));
        let user = match na.uri.scheme.as_str() {
            "tel" => Some(na.uri.opaque.clone()),
            _ => na.uri.user_unescaped(),
        };
        let anonymous = user
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case("anonymous") || u.is_empty())
            || na.uri.host.eq_ignore_ascii_case("anonymous.invalid");
        let withheld = privacy_id || rpid_private || anonymous;
        let number = if withheld {
            None
        } else {
            user.as_deref().and_then(number_of)
        };
        let name = na
            .display
            .filter(|d| !d.is_empty() && !d.eq_ignore_ascii_case("anonymous"));
        return CallerId {
            raw: value.to_string(),
            number,
            name: if withheld { None } else { name },
            withheld,
        };
    }
    CallerId {
        raw: String::new(),
        number: None,
        name: None,
        withheld: true,
    }
}

/// Keeps a user part (or a tel: URI's number) that is a phone number: digits with visual
/// separators and an optional `+`. A local number whose `phone-context` is a global number
/// prefix (RFC 3966 §5.1.5, `62345678;phone-context=+86-10`) becomes that global number.
fn number_of(user: &str) -> Option<String> {
    let mut parts = user.split(';');
    let local = parts.next().unwrap_or(user);
    let context = parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("phone-context"))
        .map(|(_, v)| v.trim())
        .filter(|v| v.starts_with('+'));
    let mut out = String::with_capacity(user.len());
    if let (Some(prefix), false) = (context, local.starts_with('+')) {
        out.push('+');
        out.extend(prefix.chars().filter(char::is_ascii_digit));
    }
    let user = local;
    for (i, c) in user.chars().enumerate() {
        match c {
            '+' if i == 0 && out.is_empty() => out.push('+'),
            '0'..='9' => out.push(c),
            '-' | '.' | '(' | ')' | ' ' => {}
            _ => return None,
        }
    }
    (out.trim_start_matches('+').len() >= 2).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    fn req(extra: &str) -> Request {
        let raw = format!(
            "INVITE sip:100@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: \"Ann\" <sip:+15551234567@gw>;tag=1\r\nTo: <sip:100@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match Message::parse(raw.as_bytes()).unwrap() {
            Message::Request(r) => r,
            _ => panic!(),
        }
    }

    fn prefs() -> Vec<String> {
        vec![
            "P-Asserted-Identity".into(),
            "Remote-Party-ID".into(),
            "From".into(),
        ]
    }

    #[test]
    fn pai_wins_over_from() {
        let c = extract(
            &req("P-Asserted-Identity: <sip:0201234567@gw>\r\n"),
            &prefs(),
        );
        assert_eq!(c.number.as_deref(), Some("0201234567"));
        let c = extract(&req(""), &prefs());
        assert_eq!(c.number.as_deref(), Some("+15551234567"));
        assert_eq!(c.name.as_deref(), Some("Ann"));
    }

    #[test]
    fn privacy_and_anonymous_withhold() {
        assert!(extract(&req("Privacy: id\r\n"), &prefs()).withheld);
        let r = req("P-Asserted-Identity: \"Anonymous\" <sip:anonymous@anonymous.invalid>\r\n");
        let c = extract(&r, &prefs());
        assert!(c.withheld && c.number.is_none());
        let c = extract(
            &req("P-Asserted-Identity: <tel:+442071234567>\r\n"),
            &prefs(),
        );
        assert_eq!(c.number.as_deref(), Some("+442071234567"));
    }

    #[test]
    fn phone_context_places_a_local_number() {
        for (header, want) in [
            ("<tel:62345678;phone-context=+86-10>", "+861062345678"),
            (
                "<sip:6234-5678;phone-context=+8610@gw;user=phone>",
                "+861062345678",
            ),
            // A domain context names no number prefix: the digits as they are.
            ("<tel:62345678;phone-context=pbx.example.com>", "62345678"),
            ("<tel:+86-10-6234-5678;phone-context=+1>", "+861062345678"),
        ] {
            let c = extract(
                &req(&format!("P-Asserted-Identity: {header}\r\n")),
                &prefs(),
            );
            assert_eq!(c.number.as_deref(), Some(want), "{header}");
        }
    }
}
