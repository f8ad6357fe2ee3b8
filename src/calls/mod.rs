//! Calls: the only place that knows a whole call. `call.rs` is the call as a sans-IO machine,
//! `task.rs` the task that does its I/O, `admission.rs` decides whether an INVITE becomes a call.

pub(crate) mod admission;
pub mod call;
pub(crate) mod consult;
pub mod control;
pub mod dial;
pub mod dialog;
pub mod dialplan;
pub mod drain;
pub mod greeting;
pub mod outbound;
pub mod placing;
pub mod pop;
pub mod record;
pub mod survey;
pub(crate) mod task;
