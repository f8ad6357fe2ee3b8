//! screenpop: a call-center CTI service. A SIP B2BUA takes trunk calls, bridges them to the
//! agent's phone with anchored media, and records every call. See README.md for the design.

pub mod acd;
pub(crate) mod agents;
pub mod calls;
pub mod campaigns;
pub mod config;
pub mod crm;
pub mod events;
pub mod flood;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod ids;
pub mod media;
pub mod notify;
pub mod phone;
pub mod retention;
pub mod server;
pub mod sip;
pub mod store;
pub mod time;
pub mod tls;
pub mod transport;
pub(crate) mod web;
pub mod webhooks;
