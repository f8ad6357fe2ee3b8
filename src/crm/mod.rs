//! The small CRM under the call center: customers and their phones, caller-ID matching,
//! contact logs and work orders. Plain domain logic over the store.

pub mod callback;
pub mod caller;
pub mod csv;
pub mod link;
