//! The link a desktop opens beside the screen-pop: a queue's `crm_url` template filled in for
//! one call, so a call center keeping its customers in another CRM lands on the right record.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The fields a template may name, in braces.
pub const FIELDS: &[&str] = &[
    "e164",
    "number",
    "call_id",
    "contact_log_id",
    "customer_id",
    "dialed",
];

/// What is left unescaped in a value: RFC 3986 unreserved characters.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One call's values; a missing one fills in as empty.
#[derive(Debug, Default, Clone)]
pub struct LinkFields<'a> {
    pub e164: Option<&'a str>,
    /// The caller's number as it came (when it does not parse as E.164).
    pub number: Option<&'a str>,
    pub call_id: &'a str,
    pub contact_log_id: Option<i64>,
    pub customer_id: Option<i64>,
    pub dialed: &'a str,
}

/// Checks a template when a queue is saved: an http(s) URL naming only known fields, so a
/// typo shows at once rather than as a broken link on every pop.
pub fn check(template: &str) -> Result<(), String> {
    let t = template.trim();
    if !(t.starts_with("https://") || t.starts_with("http://")) {
        return Err("must be an http:// or https:// URL".into());
    }
    if t.len() > 2000 {
        return Err("must be at most 2000 characters".into());
    }
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("has a { without its }".into());
        };
        let name = &after[..close];
        if !FIELDS.contains(&name) {
            return Err(format!(
                "names {{{name}}}, which is not one of {}",
                FIELDS
                    .iter()
                    .map(|f| format!("{{{f}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// The template with each `{field}` replaced by its value, percent-encoded.
pub fn fill(template: &str, f: &LinkFields<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template.trim();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let value: Cow<'_, str> = match &after[..close] {
            "e164" => f.e164.unwrap_or("").into(),
            "number" => f.number.or(f.e164).unwrap_or("").into(),
            "call_id" => f.call_id.into(),
            "contact_log_id" => f
                .contact_log_id
                .map(|v| v.to_string())
                .unwrap_or_default()
                .into(),
            "customer_id" => f
                .customer_id
                .map(|v| v.to_string())
                .unwrap_or_default()
                .into(),
            "dialed" => f.dialed.into(),
            // Checked when saved; an unknown name stays as written.
            other => format!("{{{other}}}").into(),
        };
        out.extend(utf8_percent_encode(&value, VALUE));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_filled_with_encoded_values() {
        let f = LinkFields {
            e164: Some("+8613800138000"),
            number: None,
            call_id: "1764-ab12",
            contact_log_id: Some(42),
            customer_id: None,
            dialed: "800 555",
        };
        assert_eq!(
            fill("https://crm.example/c?phone={e164}&call={call_id}&log={contact_log_id}&cust={customer_id}&to={dialed}", &f),
            "https://crm.example/c?phone=%2B8613800138000&call=1764-ab12&log=42&cust=&to=800%20555"
        );
        assert_eq!(fill("https://x/{number}", &f), "https://x/%2B8613800138000");
    }

    #[test]
    fn a_bad_template_is_refused_with_the_reason() {
        assert!(check("https://crm.example/customers?phone={e164}&call={call_id}").is_ok());
        assert!(check("javascript:alert(1)").unwrap_err().contains("http"));
        assert!(check("https://x/{phone}").unwrap_err().contains("{phone}"));
        assert!(check("https://x/{e164").unwrap_err().contains("}"));
    }
}
