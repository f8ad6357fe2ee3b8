//! Calls: one task per call glues SIP, media, the ACD and the CRM together. This is the only
//! place that knows a whole call.

pub mod b2bua;
pub mod dial;
pub mod dialog;
pub mod pop;
pub mod record;
