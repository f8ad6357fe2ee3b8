//! The three ids a call has, as types, because one name (`call_id`) meant each of them in
//! different places: screenpop's own id of the call ([`CallKey`]), the SIP Call-ID of one of its
//! legs ([`SipCallId`]) and the contact log row the call writes ([`ContactLogId`]). Each
//! serializes as the bare value, so the wire and the records on disk are unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A string id: constructed from its text, shown and serialized as its bare text.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name(s.to_string())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                $name(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// screenpop's own id of a call: names its recording, its events and its place in the ACD.
    CallKey
);

string_id!(
    /// The Call-ID header of one leg of a call (RFC 3261 §8.1.1.4): the caller's leg has the
    /// trunk's, each agent leg one screenpop made up.
    SipCallId
);

/// The contact log row of a call (the store's `calls.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContactLogId(i64);

impl ContactLogId {
    pub fn new(id: i64) -> ContactLogId {
        ContactLogId(id)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ContactLogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_their_bare_values() {
        let k = CallKey::new("1796-0a");
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"1796-0a\"");
        let l: ContactLogId = serde_json::from_str("42").unwrap();
        assert_eq!(l.get(), 42);
        assert_eq!(SipCallId::new("a@b").to_string(), "a@b");
    }
}
