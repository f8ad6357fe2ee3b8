//! Where screenpop may call out, and how the outbound gateway wants the number written.
//!
//! Click-to-dial, transfers to outside numbers and voice campaigns all place calls through the
//! profile's `[outbound]` gateway, which bills the call center for each. So every number is
//! parsed for the profile's region and checked against the `allow` patterns before anything is
//! sent: the default lets through fixed-line and mobile numbers of the region only, never
//! premium-rate or international ones (the usual toll fraud). This is pure and unit-tested;
//! the API turns a [`DialError`] into a 422 naming the field.

use phonenumber::country::Id;
use phonenumber::{Mode, PhoneNumber, Type};

use crate::config::{NumberFormat, Outbound};
use crate::phone::NumberPlan;
use crate::sip::Uri;

/// One `allow` pattern, read once when the profile loads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allow {
    /// Fixed-line and mobile numbers of the profile's region.
    National,
    /// Mobile numbers of the profile's region.
    Mobile,
    /// Toll-free numbers of the profile's region.
    TollFree,
    /// E.164 numbers starting with these digits (`+44*`), or exactly this number (`+15550100`).
    Prefix { digits: String, exact: bool },
}

impl Allow {
    fn parse(p: &str) -> Result<Allow, String> {
        let p = p.trim();
        match p {
            "national" => return Ok(Allow::National),
            "mobile" => return Ok(Allow::Mobile),
            "toll_free" => return Ok(Allow::TollFree),
            _ => {}
        }
        let Some(rest) = p.strip_prefix('+') else {
            return Err(format!(
                "{p:?}: expected national, mobile, toll_free or an E.164 prefix like \"+44*\""
            ));
        };
        let (digits, exact) = match rest.strip_suffix('*') {
            Some(d) => (d, false),
            None => (rest, true),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{p:?}: only digits may follow '+' (and one '*' at the end)"
            ));
        }
        Ok(Allow::Prefix {
            digits: digits.to_string(),
            exact,
        })
    }

    fn admits(&self, n: &Target, region: Id) -> bool {
        let home = n.country == Some(region);
        match self {
            Allow::National => {
                home && matches!(
                    n.kind,
                    Type::FixedLine | Type::Mobile | Type::FixedLineOrMobile
                )
            }
            Allow::Mobile => home && matches!(n.kind, Type::Mobile | Type::FixedLineOrMobile),
            Allow::TollFree => home && n.kind == Type::TollFree,
            Allow::Prefix { digits, exact } => {
                let d = &n.e164[1..];
                if *exact {
                    d == digits
                } else {
                    d.starts_with(digits.as_str())
                }
            }
        }
    }
}

/// A parsed number with what the patterns look at.
struct Target {
    e164: String,
    country: Option<Id>,
    kind: Type,
}

/// Why a number is not called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("{0:?} is not a phone number screenpop can read")]
    Unreadable(String),
    #[error("{number} is not allowed by outbound.allow ({why})")]
    NotAllowed { number: String, why: String },
}

/// A number ready for the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialable {
    /// `+15550100`.
    pub e164: String,
    /// As dialled inside the country, digits only: `2015550123`, `13800138000`, `01065529988`.
    pub national: String,
    /// The Request-URI for the gateway (`uri` filled in).
    pub uri: Uri,
}

/// The outbound gateway's rules.
#[derive(Debug, Clone)]
pub struct DialPlan {
    uri: String,
    format: NumberFormat,
    allow: Vec<Allow>,
    plan: NumberPlan,
}

impl DialPlan {
    /// Reads the `[outbound]` section; the error names the field and what is wrong with it.
    pub fn new(o: &Outbound, plan: NumberPlan) -> Result<DialPlan, (&'static str, String)> {
        let allow = match &o.allow {
            None => vec![Allow::National],
            Some(list) => list
                .iter()
                .map(|p| Allow::parse(p))
                .collect::<Result<_, _>>()
                .map_err(|e| ("outbound.allow", e))?,
        };
        if !["{number}", "{e164}", "{national}"]
            .iter()
            .any(|p| o.uri.contains(p))
        {
            return Err((
                "outbound.uri",
                format!(
                    "{:?} must contain {{number}} (or {{e164}}, {{national}})",
                    o.uri
                ),
            ));
        }
        let d = DialPlan {
            uri: o.uri.clone(),
            format: o.number_format,
            allow,
            plan,
        };
        d.fill("+15550100", "5550100")
            .map_err(|e| ("outbound.uri", format!("{:?}: {e}", o.uri)))?;
        Ok(d)
    }

    fn fill(&self, e164: &str, national: &str) -> Result<Uri, String> {
        let number = match self.format {
            NumberFormat::E164 => e164,
            NumberFormat::Digits => &e164[1..],
            NumberFormat::National => national,
        };
        let text = self
            .uri
            .replace("{number}", number)
            .replace("{e164}", e164)
            .replace("{national}", national);
        Uri::parse(&text).map_err(|e| e.to_string())
    }

    /// Reads `raw` as typed by an agent or stored on a customer, checks it against the
    /// patterns and fills in the gateway's URI.
    pub fn check(&self, raw: &str) -> Result<Dialable, DialError> {
        let region = self.plan.region();
        let text = raw.trim();
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        let unreadable = || DialError::Unreadable(raw.to_string());
        if digits.is_empty() {
            return Err(unreadable());
        }
        // The same reading as caller IDs and stored phones (area code, 00 and 011 prefixes),
        // then only numbers that are assigned somewhere.
        let e164 = crate::phone::normalize(text, self.plan)
            .ok()
            .and_then(|n| n.e164)
            .ok_or_else(unreadable)?;
        let n: PhoneNumber = phonenumber::parse(None, &e164).map_err(|_| unreadable())?;
        let e164 = n.format().mode(Mode::E164).to_string();
        let target = Target {
            e164: e164.clone(),
            country: n.country().id(),
            kind: n.number_type(&phonenumber::metadata::DATABASE),
        };
        if !self.allow.iter().any(|a| a.admits(&target, region)) {
            let why = match (target.country == Some(region), target.kind) {
                (false, _) => format!("outside {region:?}"),
                (true, Type::PremiumRate) => "a premium-rate number".to_string(),
                (true, Type::TollFree) => "a toll-free number".to_string(),
                (true, Type::SharedCost) => "a shared-cost number".to_string(),
                (true, k) => format!("a {k:?} number"),
            };
            return Err(DialError::NotAllowed { number: e164, why });
        }
        // As dialled inside the country, trunk prefix included (`02079460018`), digits only.
        let national: String = n
            .format()
            .mode(Mode::National)
            .to_string()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let uri = self
            .fill(&e164, &national)
            .map_err(|_| DialError::Unreadable(raw.to_string()))?;
        Ok(Dialable {
            e164,
            national,
            uri,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(region: &str, allow: Option<&[&str]>, format: NumberFormat) -> DialPlan {
        let o = Outbound {
            uri: "sip:{number}@gw.example:5060".into(),
            number_format: format,
            username: None,
            password: None,
            caller_id: None,
            allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
            ring_timeout_secs: 60,
        };
        let p = NumberPlan::new(crate::phone::region(region).unwrap());
        DialPlan::new(&o, p).unwrap()
    }

    #[test]
    fn national_and_mobile_numbers_of_the_region_pass_by_default() {
        let us = plan("US", None, NumberFormat::E164);
        let d = us.check("(201) 555-0123").unwrap();
        assert_eq!(d.e164, "+12015550123");
        assert_eq!(d.uri.to_string(), "sip:+12015550123@gw.example:5060");
        let cn = plan("CN", None, NumberFormat::National);
        let m = cn.check("138 0013 8000").unwrap();
        assert_eq!(m.e164, "+8613800138000");
        assert_eq!(m.uri.to_string(), "sip:13800138000@gw.example:5060");
        let landline = cn.check("010 6552 9988").expect("a Beijing landline");
        assert_eq!(
            landline.uri.to_string(),
            "sip:01065529988@gw.example:5060",
            "dialled nationally with the trunk prefix"
        );
    }

    #[test]
    fn premium_international_and_unreadable_numbers_are_refused_with_the_reason() {
        let us = plan("US", None, NumberFormat::E164);
        match us.check("+1 900 555 0123") {
            Err(DialError::NotAllowed { why, .. }) => assert!(why.contains("premium"), "{why}"),
            other => panic!("{other:?}"),
        }
        match us.check("+44 20 7946 0018") {
            Err(DialError::NotAllowed { number, why }) => {
                assert_eq!(number, "+442079460018");
                assert!(why.contains("outside"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        for bad in ["", "call me", "12", "+1 555"] {
            assert!(
                matches!(us.check(bad), Err(DialError::Unreadable(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn patterns_widen_or_narrow_what_is_allowed() {
        let uk = plan("US", Some(&["+44*", "toll_free"]), NumberFormat::Digits);
        let d = uk.check("+44 20 7946 0018").unwrap();
        assert_eq!(d.uri.to_string(), "sip:442079460018@gw.example:5060");
        assert!(uk.check("1-800-555-0199").is_ok(), "toll-free allowed");
        assert!(uk.check("201-555-0123").is_err(), "national not listed");
        let one = plan("US", Some(&["+12015550123"]), NumberFormat::E164);
        assert!(one.check("2015550123").is_ok());
        assert!(one.check("2015550124").is_err());
        let mobile = plan("CN", Some(&["mobile"]), NumberFormat::E164);
        assert!(mobile.check("13800138000").is_ok());
        assert!(mobile.check("010 6552 9988").is_err());
    }

    #[test]
    fn bad_patterns_and_templates_name_the_field() {
        let p = NumberPlan::new(crate::phone::region("US").unwrap());
        let mut o = Outbound {
            uri: "sip:gw.example".into(),
            number_format: NumberFormat::E164,
            username: None,
            password: None,
            caller_id: None,
            allow: None,
            ring_timeout_secs: 60,
        };
        assert_eq!(DialPlan::new(&o, p).unwrap_err().0, "outbound.uri");
        o.uri = "sip:{number}@gw.example".into();
        for bad in ["international", "44*", "+4x*", "+"] {
            o.allow = Some(vec![bad.into()]);
            assert_eq!(
                DialPlan::new(&o, p).unwrap_err().0,
                "outbound.allow",
                "{bad}"
            );
        }
    }
}
