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
    #[error("area code {0:?} is not 1 to 8 digits as written nationally (e.g. \"010\")")]
    BadAreaCode(String),
}

/// Parses an ISO 3166 region code for the profile.
pub fn region(code: &str) -> Result<Id, PhoneError> {
    code.trim()
        .to_ascii_uppercase()
        .parse::<Id>()
        .map_err(|_| PhoneError::UnknownRegion(code.to_string()))
}

/// How numbers written without their country (and, for local numbers, without their area) are
/// read: the profile's `default_region` and `area_code`. Normalizing under one plan when a
/// number is stored and when a call arrives makes the two meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberPlan {
    region: Id,
    /// The area code as written nationally (trunk prefix included, e.g. `010`), as digits.
    area: Option<AreaCode>,
}

/// Up to 8 digits, kept inline so a plan is `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AreaCode {
    digits: [u8; 8],
    len: u8,
}

impl AreaCode {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.digits[..usize::from(self.len)]).unwrap_or("")
    }
}

impl NumberPlan {
    /// A plan for `region` with no area code: local numbers stay unplaced.
    pub fn new(region: Id) -> NumberPlan {
        NumberPlan { region, area: None }
    }

    /// Local numbers (too short to be national, no prefix) are read inside `area_code`, the
    /// area as written nationally: `"010"` for Beijing, `"020"` for London, `"415"` for San
    /// Francisco.
    pub fn with_area_code(self, area_code: &str) -> Result<NumberPlan, PhoneError> {
        let code = area_code.trim();
        if code.is_empty() || code.len() > 8 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneError::BadAreaCode(area_code.to_string()));
        }
        let mut digits = [0u8; 8];
        digits[..code.len()].copy_from_slice(code.as_bytes());
        Ok(NumberPlan {
            region: self.region,
            area: Some(AreaCode {
                digits,
                len: code.len() as u8,
            }),
        })
    }

    pub fn region(&self) -> Id {
        self.region
    }
}

impl From<Id> for NumberPlan {
    fn from(region: Id) -> NumberPlan {
        NumberPlan::new(region)
    }
}

/// The longest number a PBX delivers as a local (area-less) landline number: subscriber
/// numbers are 8 digits at most in the plans we know (CN, GB), 7 in North America.
const MAX_LOCAL_DIGITS: usize = 8;

/// Normalizes a number as entered or as received in a SIP header.
pub fn normalize(raw: &str, plan: impl Into<NumberPlan>) -> Result<NormalizedPhone, PhoneError> {
    let plan = plan.into();
    let default_region = plan.region;
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
    let as_national = |text: &str| {
        phonenumber::parse(Some(default_region), text)
            .ok()
            .filter(phonenumber::is_valid)
    };
    let prefixed = international.is_some() || trimmed.starts_with('0');
    let valid = international_parse
        .clone()
        .filter(phonenumber::is_valid)
        .or_else(|| as_national(trimmed))
        // A local landline number without its area code (`62345678` from a Beijing PBX).
        .or_else(|| {
            let area = plan.area?;
            (!prefixed && digits.len() <= MAX_LOCAL_DIGITS)
                .then(|| as_national(&format!("{}{digits}", area.as_str())))
                .flatten()
        })
        // The country code without `+` or `00` (`8613800138000` from some CN gateways).
        .or_else(|| {
            let cc = phonenumber::metadata::DATABASE
                .by_id(default_region.as_ref())?
                .country_code()
                .to_string();
            (international.is_none() && digits.starts_with(&cc))
                .then(|| phonenumber::parse(None, format!("+{digits}")).ok())
                .flatten()
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

    /// The forms a number reaches us in, per region: every form in a row gives its E.164.
    #[test]
    fn forms_per_region_with_an_area_code() {
        let plan = |r: &str, area: &str| NumberPlan::new(region(r).unwrap()).with_area_code(area);
        let cn = plan("CN", "010").unwrap();
        let us = plan("US", "415").unwrap();
        let gb = plan("GB", "020").unwrap();
        let table: &[(NumberPlan, &str, &[&str])] = &[
            (
                cn,
                "+861062345678",
                &[
                    "62345678",
                    "6234 5678",
                    "010-62345678",
                    "(010) 6234 5678",
                    "+86 10 6234 5678",
                    "0086 10 62345678",
                    "861062345678",
                ],
            ),
            (
                cn,
                "+8613800138000",
                &[
                    "13800138000",
                    "138-0013-8000",
                    "+86 138 0013 8000",
                    "008613800138000",
                    "8613800138000",
                    "013800138000",
                ],
            ),
            (
                us,
                "+14155552671",
                &[
                    "5552671",
                    "555-2671",
                    "(415) 555-2671",
                    "1 415 555 2671",
                    "+1 415 555 2671",
                    "011 1 415 555 2671",
                ],
            ),
            (
                gb,
                "+442079460018",
                &[
                    "79460018",
                    "7946 0018",
                    "020 7946 0018",
                    "+44 20 7946 0018",
                    "0044 20 7946 0018",
                    "442079460018",
                ],
            ),
        ];
        for (plan, want, forms) in table {
            for raw in *forms {
                let n = normalize(raw, *plan).unwrap();
                assert_eq!(
                    n.e164.as_deref(),
                    Some(*want),
                    "{raw} in {:?}",
                    plan.region()
                );
            }
        }
    }

    #[test]
    fn local_numbers_stay_unplaced_without_an_area_code() {
        let cn = region("CN").unwrap();
        let n = normalize("62345678", cn).unwrap();
        assert_eq!(n.e164, None);
        assert_eq!(n.national, "62345678");
        // With one, a national number is never read as local.
        let beijing = NumberPlan::new(cn).with_area_code("010").unwrap();
        let shanghai = normalize("021 6234 5678", beijing).unwrap();
        assert_eq!(shanghai.e164.as_deref(), Some("+862162345678"));
        for bad in ["", "01a", "123456789"] {
            assert!(NumberPlan::new(cn).with_area_code(bad).is_err(), "{bad:?}");
        }
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
