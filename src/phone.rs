//! Phone numbers: normalized once, when stored or when a call arrives, with the `phonenumber`
//! crate (libphonenumber's metadata) and the SIP profile's default region.
//!
//! Matching uses two keys: the E.164 form when the number parses, and the national
//! significant number (digits without country code or trunk prefix) as the fallback for numbers
//! that arrive in a form the metadata cannot place (`0…`, `00…`, `011…`, `+…`).

use phonenumber::country::Id;
use phonenumber::Mode;

/// The keys a number is stored and matched under.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NormalizedPhone {
    /// `+15551234567`, when the number parses as a valid number.
    pub e164: Option<String>,
    /// National significant number: the digits after the country code and trunk prefix.
    pub national: String,
}

/// Why a number cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("no digits in {0:?}")]
    NoDigits(String),
    #[error("unknown region {0:?} (use an ISO 3166 code such as US, GB, CN)")]
    UnknownRegion(String),
}

/// Parses an ISO 3166 region code for the profile.
pub fn region(code: &str) -> Result<Id, PhoneError> {
    code.trim()
        .to_ascii_uppercase()
        .parse::<Id>()
        .map_err(|_| PhoneError::UnknownRegion(code.to_string()))
}

/// Normalizes a number as entered or as received in a SIP header.
pub fn normalize(raw: &str, default_region: Id) -> Result<NormalizedPhone, PhoneError> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Err(PhoneError::NoDigits(raw.to_string()));
    }
    let trimmed = raw.trim();
    // International prefixes typed in front of a country code: 00 (most of the world) and 011
    // (North America) mean the same as a leading '+'.
    let international = if trimmed.starts_with('+') {
        Some(format!("+{digits}"))
    } else if let Some(rest) = digits.strip_prefix("011").filter(|_| digits.len() > 10) {
        Some(format!("+{rest}"))
    } else {
        digits
            .strip_prefix("00")
            .filter(|r| r.len() >= 8)
            .map(|rest| format!("+{rest}"))
    };
    let international_parse = international
        .as_deref()
        .and_then(|i| phonenumber::parse(None, i).ok());
    let valid = international_parse
        .clone()
        .filter(phonenumber::is_valid)
        .or_else(|| {
            phonenumber::parse(Some(default_region), trimmed)
                .ok()
                .filter(phonenumber::is_valid)
        });
    Ok(match (valid, international_parse) {
        (Some(n), _) => NormalizedPhone {
            e164: Some(n.format().mode(Mode::E164).to_string()),
            national: n.national().to_string(),
        },
        // Not an assigned number, but written with its country code: the digits after it.
        (None, Some(n)) => NormalizedPhone {
            e164: None,
            national: n.national().to_string(),
        },
        // Neither: the digits as dialled, without trunk or international prefixes.
        (None, None) => NormalizedPhone {
            e164: None,
            national: strip_prefixes(&digits).to_string(),
        },
    })
}

/// Digits without the prefixes a caller may have dialled in front of a national number.
fn strip_prefixes(digits: &str) -> &str {
    for p in ["011", "00", "0"] {
        if let Some(rest) = digits.strip_prefix(p) {
            if rest.len() >= 6 {
                return rest;
            }
        }
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Id {
        region("us").unwrap()
    }

    #[test]
    fn national_and_international_forms_agree() {
        let want = Some("+14155552671".to_string());
        for raw in [
            "+1 415 555 2671",
            "(415) 555-2671",
            "415.555.2671",
            "1-415-555-2671",
            "011 1 415 555 2671",
            "0014155552671",
        ] {
            let n = normalize(raw, us()).unwrap();
            assert_eq!(n.e164, want, "{raw}");
            assert_eq!(n.national, "4155552671", "{raw}");
        }
    }

    #[test]
    fn other_regions() {
        let gb = region("GB").unwrap();
        let n = normalize("020 7946 0018", gb).unwrap();
        assert_eq!(n.e164.as_deref(), Some("+442079460018"));
        assert_eq!(n.national, "2079460018");
        let cn = region("CN").unwrap();
        let n = normalize("138 0013 8000", cn).unwrap();
        assert_eq!(n.e164.as_deref(), Some("+8613800138000"));
        // A foreign number in international form from a US trunk.
        let n = normalize("+86 138 0013 8000", us()).unwrap();
        assert_eq!(n.e164.as_deref(), Some("+8613800138000"));
    }

    #[test]
    fn unassigned_numbers_still_match_nationally() {
        // 555-123-xxxx is not an assigned US number: no E.164 key, same national key either way.
        let a = normalize("+1 555 123 0001", us()).unwrap();
        let b = normalize("(555) 123-0001", us()).unwrap();
        assert_eq!(a.e164, None);
        assert_eq!(a.national, "5551230001");
        assert_eq!(a, b);
    }

    #[test]
    fn unparseable_numbers_keep_a_national_key() {
        let n = normalize("0 123456", us()).unwrap();
        assert_eq!(n.e164, None);
        assert_eq!(n.national, "123456");
        assert!(normalize("anonymous", us()).is_err());
        assert!(region("XX").is_err());
    }
}
