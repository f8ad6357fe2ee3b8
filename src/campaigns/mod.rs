//! Greeting and broadcast campaigns (issue 12). What is here so far is the part every channel
//! shares and that is decided without I/O: the message template and its customer fields
//! ([`template`]), how a text travels as SMS (GSM 7-bit or UCS-2, split and concatenated with
//! a UDH: [`sms`]), on which day a birthday or an anniversary falls, by the Gregorian or the
//! lunar calendar ([`occasion`]), and when a campaign runs and keeps quiet in its own time zone
//! ([`schedule`]). The store, the scheduler and the channels (SMPP, SIP MESSAGE, voice) build
//! on them.

pub mod occasion;
pub mod plan;
pub mod run;
pub mod runner;
pub mod schedule;
pub mod smpp;
pub mod sms;
pub mod spec;
pub mod template;
